# bootherd as a container: built with cargo, run on slim Debian with Debian's iPXE bootloaders,
# as a non-root user that may only bind the low ports. Run it with host networking (see
# docker/compose.yaml): PXE requests are broadcasts that a bridged network never delivers.
#
#   docker build -t bootherd .
#   docker run -d --network host --cap-drop ALL --cap-add NET_BIND_SERVICE \
#       -v bootherd:/var/lib/bootherd -e BOOTHERD_ADMIN_PASSWORD=... bootherd
#
# The base images are arguments so an offline build can use local copies (the image test in
# crates/bootherd/tests/container.rs does).
ARG RUST_IMAGE=docker.io/library/rust:1-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Only the binary leaves this stage; the build cache stays behind.
RUN cargo build --release --locked -p bootherd \
 && install -D -m 0755 target/release/bootherd /out/bootherd \
 && rm -rf target

FROM ${RUNTIME_IMAGE}
# ipxe: undionly.kpxe, ipxe.efi and snponly.efi in /usr/lib/ipxe, which bootherd offers.
# libcap2-bin only to give the binary CAP_NET_BIND_SERVICE (ports 67, 69 and 4011 below 1024);
# receiving and sending broadcasts needs no capability.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ipxe libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system -K SYS_UID_MAX=10001 --uid 10001 --user-group --home-dir /var/lib/bootherd --shell /usr/sbin/nologin bootherd \
 && install -d -o bootherd -g bootherd -m 0750 /var/lib/bootherd
COPY --from=build /out/bootherd /usr/local/bin/bootherd
RUN setcap cap_net_bind_service=+ep /usr/local/bin/bootherd \
 && apt-get purge -y --auto-remove libcap2-bin \
 && bootherd --version

ENV BOOTHERD_DATA=/var/lib/bootherd \
    BOOTHERD_HTTP_PORT=8080
VOLUME ["/var/lib/bootherd"]
# For the record; with host networking these are the host's ports.
EXPOSE 67/udp 69/udp 4011/udp 8080/tcp
USER bootherd
WORKDIR /var/lib/bootherd
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["bootherd", "health"]
ENTRYPOINT ["bootherd"]
CMD ["serve"]
