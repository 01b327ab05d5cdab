#!/usr/bin/env bash
# Benchmarks bootherd against tftpd-hpa, atftpd and dnsmasq and writes docs/benchmarks.md.
# Needs root (port 69, network namespaces). Installs the peers from Debian's packages; atftpd
# conflicts with tftpd-hpa as a package, so its binary is unpacked from the .deb instead.
# Extra arguments go to the harness, e.g. `bench/run.sh --quick` or `--reps 3`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
fi
need=()
for p in tftpd-hpa dnsmasq-base libwrap0 iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Debian package starts a tftpd-hpa daemon on port 69 unless policy-rc.d forbids it; make
# sure no stray one holds the port.
if pgrep -x in.tftpd >/dev/null; then
  echo "an in.tftpd is already running on this machine; stop it first (it holds port 69)" >&2
  exit 1
fi
if [ ! -x target/bench-peers/usr/sbin/atftpd ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download atftpd >/dev/null)
  mkdir -p target/bench-peers
  dpkg -x "$tmp"/atftpd_*.deb target/bench-peers
  rm -rf "$tmp"
fi

cargo build --release --locked -p bootherd -p bootherd-bench
exec target/release/bootherd-bench --command "bench/run.sh $*" "$@"
