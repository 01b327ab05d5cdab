#!/usr/bin/env bash
# Builds bootherd's Dockerfile with buildah (no Docker engine needed) and checks what the image
# contains: the binary runs, Debian's iPXE bootloaders are there, it runs as a non-root user
# whose only extra privilege is binding low ports, data lives in a volume, and the
# healthcheck passes against a running server.
#
# Base images cannot be pulled here, so they are made locally once (and reused):
#   localhost/debian:bookworm-slim  debootstrap --variant=minbase bookworm, imported
#   localhost/rust:bookworm         that plus gcc and this machine's Rust toolchain
# Elsewhere, `docker build .` uses the official rust and debian images instead.
#
# Needs root and: buildah podman debootstrap libcap2-bin (getcap). Takes 5-15 minutes the
# first time (debootstrap, a release build of bootherd), less afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

storage=(--storage-driver vfs)
buildah=(buildah "${storage[@]}")
podman=(podman "${storage[@]}")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=localhost/debian:bookworm-slim
rust=localhost/rust:bookworm
image=localhost/bootherd:check

have_image() { "${buildah[@]}" inspect --type image "$1" >/dev/null 2>&1; }

if ! have_image "$base"; then
  echo "== making $base with debootstrap"
  root=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # mktemp made it 0700, and the image's / would keep that: only root could run anything.
  chmod 0755 "$root"
  tar -C "$root" -c . | "${podman[@]}" import - "$base" >/dev/null
  rm -rf "$root"
fi

if ! have_image "$rust"; then
  echo "== making $rust with this machine's Rust toolchain"
  context=$(mktemp -d)
  sysroot=$(rustc --print sysroot)
  mkdir -p "$context/rust"
  cp -a "$sysroot/bin" "$sysroot/lib" "$context/rust/"
  # This machine's trust store, so cargo inside reaches crates.io the way it does here (also
  # through a proxy with its own certificate authority).
  cp /etc/ssl/certs/ca-certificates.crt "$context/"
  cat > "$context/Containerfile" <<CONTAINERFILE
FROM $base
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY rust /usr/local
CONTAINERFILE
  "${buildah[@]}" bud --quiet --pull=never --isolation chroot -t "$rust" "$context" >/dev/null
  rm -rf "$context"
fi

echo "== building the Dockerfile"
# Docker's image format: OCI images have no HEALTHCHECK.
"${buildah[@]}" bud --quiet --pull=never --isolation chroot --layers=false --format docker \
  --build-arg RUST_IMAGE="$rust" --build-arg RUNTIME_IMAGE="$base" -t "$image" . >/dev/null

echo "== checking the image"
container=$("${buildah[@]}" from --pull=never "$image")
cleanup() {
  "${buildah[@]}" umount "$container" >/dev/null 2>&1 || true
  "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
  # The build stage's leftovers; the base images stay for the next run.
  "${buildah[@]}" rmi --prune >/dev/null 2>&1 || true
}
trap cleanup EXIT
# buildah's default capability set, like Docker's, includes NET_BIND_SERVICE. (Its
# --cap-drop ALL --cap-add ... sets a wrong bounding set under chroot isolation, so the
# narrower set is not reproduced here; the low-port bind below shows the capability works.)
run() { "${buildah[@]}" run --isolation chroot "$container" -- "$@"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

version=$(run bootherd --version)
[[ $version == "bootherd "* ]] || fail "bootherd --version printed '$version'"
echo "ok: $version"

run sh -c 'test -s /usr/lib/ipxe/undionly.kpxe && test -s /usr/lib/ipxe/snponly.efi' \
  || fail "Debian's iPXE bootloaders are missing from /usr/lib/ipxe"
echo "ok: bootloaders in /usr/lib/ipxe: $(run ls /usr/lib/ipxe | tr '\n' ' ')"

user=$(run id -un)
[[ $user == bootherd && $(run id -u) != 0 ]] || fail "runs as '$user', not the bootherd user"
echo "ok: runs as $user (uid $(run id -u))"

root=$("${buildah[@]}" mount "$container")
caps=$(getcap "$root/usr/local/bin/bootherd")
[[ $caps == *"cap_net_bind_service=ep"* ]] || fail "binary capabilities are '$caps'"
[[ $(wc -l <<<"$caps") == 1 && $caps != *","* ]] || fail "more capabilities than needed: $caps"
echo "ok: only capability cap_net_bind_service (file capability)"
[[ ! -e $root/usr/bin/curl ]] || fail "curl should not be needed in the image"

config=$("${buildah[@]}" inspect --type image "$image")
python3 - "$config" <<'PY'
import json, sys
config = json.loads(sys.argv[1])
oci = config["OCIv1"]["config"]
docker = config["Docker"]["config"]
assert oci.get("User") == "bootherd", oci.get("User")
assert "/var/lib/bootherd" in (oci.get("Volumes") or {}), oci.get("Volumes")
assert oci.get("Entrypoint") == ["bootherd"], oci.get("Entrypoint")
assert oci.get("Cmd") == ["serve"], oci.get("Cmd")
health = docker.get("Healthcheck") or {}
assert health.get("Test") == ["CMD", "bootherd", "health"], health
assert "BOOTHERD_DATA=/var/lib/bootherd" in oci.get("Env", []), oci.get("Env")
print("ok: user bootherd, volume /var/lib/bootherd, entrypoint bootherd serve, healthcheck", health["Test"][1:])
PY

# The healthcheck against a real server started as the image starts it (user bootherd), on
# loopback; its TFTP port is below 1024, which only the file capability allows.
port=$((20000 + RANDOM % 20000))
low=$((700 + RANDOM % 300))
run env BOOTHERD_HTTP_PORT="$port" LOW="$low" sh -c '
  bootherd serve --bind 127.0.0.1 --dhcp-port 0 --proxy-port 0 --tftp-port "$LOW" --watch-port 0 \
      >/tmp/serve.log 2>&1 &
  server=$!
  for _ in $(seq 50); do bootherd health >/dev/null 2>&1 && break; sleep 0.2; done
  bootherd health; status=$?
  kill $server; wait $server 2>/dev/null
  grep -q "no admin password is set" /tmp/serve.log || { cat /tmp/serve.log; exit 1; }
  grep -q "TFTP server listening local=127.0.0.1:$LOW" /tmp/serve.log || { cat /tmp/serve.log; exit 1; }
  test -f /var/lib/bootherd/state.yaml -o -d /var/lib/bootherd/images || { ls -la /var/lib/bootherd; exit 1; }
  exit $status' || fail "the healthcheck did not pass against a running server"
echo "ok: healthcheck passes against a running server; as bootherd it bound port $low and wrote its data to the volume"
echo "image checks passed"
