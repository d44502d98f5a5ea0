#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on this machine, for trying hydra/launcher=slurm and the
# `slurm` tests (docs/clusters.md, "A one-node cluster on your laptop"). As root:
#
#   slurm.sh up       start munged (fresh key), slurmctld and slurmd; wait until the node is idle
#   slurm.sh down     cancel its jobs and stop the three daemons
#   slurm.sh status   say whether it is up (exit 0) or not (exit 1)
#   slurm.sh env      the line that points SLURM's commands at it: eval "$(slurm.sh env)"
#   slurm.sh config   print the slurm.conf that `up` would write (starts nothing)
#
# Everything lives in $MNIST_LIT_SLURM_DIR (default /tmp/mnist-lit-slurm): the config written
# from slurm.conf.in, the munge key and socket, the daemons' state, logs and pid files. Needs
# Debian's packages: apt-get install -y slurm-wlm munge. Ports: SLURMCTLD_PORT (6817),
# SLURMD_PORT (6818); CRED_EXPIRE: seconds a requeued job waits (10).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${MNIST_LIT_SLURM_DIR:-/tmp/mnist-lit-slurm}"
CONF="$STATE_DIR/slurm.conf"
PARTITION="${SLURM_PARTITION_NAME:-debug}"
UP_TIMEOUT_S="${UP_TIMEOUT_S:-60}"

say() { echo "[slurm.sh] $*" >&2; }
fail() { echo "error: $1" >&2; exit "${2:-1}"; }

need() {
    local missing=()
    for cmd in munged slurmctld slurmd sinfo scontrol; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] || fail "not installed: ${missing[*]}: apt-get install -y slurm-wlm munge" 2
    [ "$(id -u)" -eq 0 ] || fail "the daemons run as root here: run slurm.sh $1 as root (sudo)" 2
}

# the pid in a pid file, if that process still runs
running_pid() {
    local pid
    [ -f "$1" ] || return 1
    pid="$(cat "$1")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

node_state() {
    SLURM_CONF="$CONF" sinfo --noheader --format=%T 2>/dev/null | head -n1 | tr -d '*~#'
}

config_text() {
    local node_line
    # `slurmd -C`: this machine's NodeName line (CPUs, sockets, cores, threads, RealMemory)
    node_line="$(slurmd -C | head -n1)"
    sed -e "s|@STATE_DIR@|$STATE_DIR|g" \
        -e "s|@HOST@|$(hostname -s)|g" \
        -e "s|@CTLD_PORT@|${SLURMCTLD_PORT:-6817}|g" \
        -e "s|@SLURMD_PORT@|${SLURMD_PORT:-6818}|g" \
        -e "s|@CRED_EXPIRE@|${CRED_EXPIRE:-10}|g" \
        -e "s|@PARTITION@|$PARTITION|g" \
        -e "s|@NODE_LINE@|$node_line|g" \
        "$HERE/slurm.conf.in"
}

write_config() {
    config_text >"$CONF"
}

start_munge() {
    local dir="$STATE_DIR/munge"
    mkdir -p "$dir"
    chmod 700 "$dir"
    # a fresh key for every cluster: 1 KiB of random bytes, readable by its owner alone
    rm -f "$dir/munge.key"
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge.key"
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
}

up() {
    need up
    if [ -n "$(running_pid "$STATE_DIR/slurmctld.pid" || true)" ]; then
        say "already up ($CONF)"
        return 0
    fi
    mkdir -p "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    chmod 755 "$STATE_DIR"
    write_config
    start_munge
    # -c: a clean start, no jobs or node states from an earlier cluster in this dir
    slurmctld -c -f "$CONF"
    slurmd -c -f "$CONF"
    local waited=0 state=""
    while [ "$waited" -lt "$UP_TIMEOUT_S" ]; do
        state="$(node_state || true)"
        [ "$state" = idle ] && break
        sleep 1
        waited=$((waited + 1))
    done
    if [ "$state" != idle ]; then
        say "the node is '${state:-not answering}' after ${UP_TIMEOUT_S} s; logs: $STATE_DIR/*.log"
        tail -n 5 "$STATE_DIR/slurmctld.log" "$STATE_DIR/slurmd.log" >&2 || true
        down
        fail "the one-node cluster did not come up"
    fi
    say "up in ${waited} s: partition $PARTITION, node $(hostname -s) idle; SLURM_CONF=$CONF"
}

# stop the daemon of a pid file and wait (up to 20 s) until it is gone
stop_pid_file() {
    local pid
    pid="$(running_pid "$1" || true)"
    [ -n "$pid" ] || return 0
    kill "$pid"
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 1
    done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    if [ -n "$(running_pid "$STATE_DIR/slurmctld.pid" || true)" ]; then
        # its jobs first: slurmd signals their processes and waits for them
        SLURM_CONF="$CONF" scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
        for _ in $(seq 1 15); do
            [ -z "$(SLURM_CONF="$CONF" squeue --noheader --states=all 2>/dev/null | grep -v ' CG ' \
                | grep -E ' (R|PD|CF|S) ' || true)" ] && break
            sleep 1
        done
    fi
    stop_pid_file "$STATE_DIR/slurmd.pid"
    stop_pid_file "$STATE_DIR/slurmctld.pid"
    stop_pid_file "$STATE_DIR/munge/munged.pid"
    say "down"
}

status() {
    if [ -n "$(running_pid "$STATE_DIR/slurmctld.pid" || true)" ] && [ -n "$(node_state)" ]; then
        echo "up: node $(hostname -s) $(node_state); export SLURM_CONF=$CONF"
    else
        echo "down"
        return 1
    fi
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
config)
    command -v slurmd >/dev/null || fail "not installed: slurmd: apt-get install -y slurm-wlm munge" 2
    config_text
    ;;
*) fail "usage: slurm.sh up|down|status|env|config" 2 ;;
esac
