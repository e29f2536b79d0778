#!/usr/bin/env bash
# Makes podman and buildah build images on this machine (root, no Docker engine, no systemd),
# for engine.ImageBuildEngine's LocalImage provider. Idempotent; safe to run on every test run.
# usage: scripts/image-builder.sh            install (Debian packages) and configure
#        scripts/image-builder.sh --check    exit 0 if both already work, else say why
# Everything it writes is in $TASKRIG_IMAGE_STORE (default ~/.cache/taskrig-images): the image
# store, its run root and the two config files engine/image.py points podman and buildah at
# (CONTAINERS_STORAGE_CONF, CONTAINERS_CONF). /etc/containers and /var/lib/containers stay as
# they are. Storage: overlay where the kernel allows it on that folder, else vfs (slow, but works
# everywhere). RUN steps use the host's network (engine/image.py passes --network host), so no
# bridge or firewall rule is made.
set -euo pipefail
store=${TASKRIG_IMAGE_STORE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskrig-images}
export CONTAINERS_STORAGE_CONF=$store/storage.conf CONTAINERS_CONF=$store/containers.conf

works() { podman info >/dev/null 2>&1 && buildah info >/dev/null 2>&1; }

if [ "${1:-}" = "--check" ]; then
  command -v podman >/dev/null && command -v buildah >/dev/null || { echo "podman or buildah is not installed" >&2; exit 1; }
  [ -f "$CONTAINERS_STORAGE_CONF" ] || { echo "no $CONTAINERS_STORAGE_CONF (run scripts/image-builder.sh)" >&2; exit 1; }
  works || { echo "podman info or buildah info fails with $store's configuration" >&2; exit 1; }
  exit 0
fi

if ! command -v podman >/dev/null || ! command -v buildah >/dev/null; then
  echo "installing podman and buildah" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # conmon comes as a dependency; recommends (slirp4netns, fuse-overlayfs, ...) are not needed as root
  apt-get install -y -q --no-install-recommends podman buildah runc
fi
# runc, not Debian's default crun: crun refuses every RUN step on a host with cgroups in hybrid mode
# (v1 controllers plus a cgroup2 mount, as some machines here boot: "cgroups in hybrid mode not
# supported"); runc runs on v1, hybrid and v2 alike.
command -v runc >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends runc; }
runc=$(command -v runc)

mkdir -p "$store"
write_conf() {  # $1: storage driver
  cat >"$CONTAINERS_STORAGE_CONF.tmp" <<EOF
# written by scripts/image-builder.sh: taskrig's own image store
[storage]
driver = "$1"
graphroot = "$store/storage"
runroot = "$store/run"
EOF
  mv "$CONTAINERS_STORAGE_CONF.tmp" "$CONTAINERS_STORAGE_CONF"
  cat >"$CONTAINERS_CONF.tmp" <<EOF
# written by scripts/image-builder.sh: no systemd here (cgroupfs, events to a file)
[containers]
netns = "host"

[engine]
runtime = "$runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$store/events.log"
tmp_dir = "$store/libpod"
volume_path = "$store/volumes"
EOF
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
}

current=$(sed -n 's/^driver = "\(.*\)"/\1/p' "$CONTAINERS_STORAGE_CONF" 2>/dev/null || true)
write_conf "${current:-overlay}"
if ! works; then
  if [ "${current:-overlay}" = overlay ] && [ ! -d "$store/storage/overlay-images" ]; then
    echo "overlay storage does not work in $store; using vfs" >&2
    write_conf vfs
  fi
  works || { echo "podman/buildah do not work with $store's configuration:" >&2; podman info >&2 || buildah info >&2; exit 1; }
fi
echo "image builders ready: podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}'), storage $(sed -n 's/^driver = "\(.*\)"/\1/p' "$CONTAINERS_STORAGE_CONF") in $store" >&2
