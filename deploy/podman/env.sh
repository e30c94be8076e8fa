# Source me: rootful podman with runc, host networking and explicit ulimits, all state under
# $PRESSO_PODMAN_DIR (default /tmp/presso-podman). See README, "Container image".
export PRESSO_PODMAN_DIR="${PRESSO_PODMAN_DIR:-/tmp/presso-podman}"
mkdir -p "$PRESSO_PODMAN_DIR"/{storage,run,tmp}
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=20000; [ "$nofile" -gt 20000 ] && nofile=20000
cat > "$PRESSO_PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PRESSO_PODMAN_DIR/storage"
runroot = "$PRESSO_PODMAN_DIR/run"
CONF
cat > "$PRESSO_PODMAN_DIR/containers.conf" <<CONF
[containers]
netns = "host"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$PRESSO_PODMAN_DIR/tmp"
CONF
export CONTAINERS_STORAGE_CONF="$PRESSO_PODMAN_DIR/storage.conf"
export CONTAINERS_CONF="$PRESSO_PODMAN_DIR/containers.conf"
