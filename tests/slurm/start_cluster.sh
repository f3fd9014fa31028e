#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, on loopback, for tests and demos.
#
# Needs root and Debian's packages (slurmctld, slurmd, slurm-client, munge); run
#     apt-get install -y slurmctld slurmd slurm-client munge
# first, or pass --install to let this script do it.
#
# Everything the cluster writes (slurm.conf, state, daemon logs, pid files) lives under
# $POSITRONGAN_SLURM_DIR (default /var/tmp/positrongan-slurm). /etc/slurm/slurm.conf becomes a
# symlink to its slurm.conf: the Snakemake job step runs `srun` with every SLURM_* variable
# (SLURM_CONF included) removed, so clients must find the config at its default path. A real
# /etc/slurm/slurm.conf (not our symlink) is never replaced: the script stops instead.
#
# Accounting: none (no slurmdbd). Job status comes from squeue, which lists finished jobs for
# MinJobAge (600 s here); the Snakemake profile is told so with --slurm-status-command squeue.
#
# Idempotent: daemons already running with this config are left running; the script returns once
# `sinfo` shows the node idle (or fails after 60 s, printing the daemon logs).
set -euo pipefail

if [[ "${1:-}" == "--install" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi

STATE="${POSITRONGAN_SLURM_DIR:-/var/tmp/positrongan-slurm}"
CONF="$STATE/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf

for exe in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$exe" >/dev/null || {
        echo "start_cluster.sh: '$exe' not found; install Debian's slurmctld slurmd slurm-client munge (or pass --install)" >&2
        exit 1
    }
done
if [[ $(id -u) -ne 0 ]]; then
    echo "start_cluster.sh: must run as root (slurmd launches jobs as their owner)" >&2
    exit 1
fi

mkdir -p "$STATE"/ctld "$STATE"/d "$STATE"/log
if [[ -e "$ETC_CONF" || -L "$ETC_CONF" ]] && [[ "$(readlink -f "$ETC_CONF")" != "$(readlink -f "$CONF")" ]]; then
    echo "start_cluster.sh: $ETC_CONF exists and is not this test cluster's; not touching it" >&2
    exit 1
fi
mkdir -p /etc/slurm
ln -sfn "$CONF" "$ETC_CONF"

# --- munge: the authentication daemon every SLURM command talks to --------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
chown "$MUNGE_USER" /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown "$MUNGE_USER" /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ "$MUNGE_USER" == munge ]]; then
        runuser -u munge -- munged
    else
        munged --force
    fi
    touch "$STATE/munged.started"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- slurm.conf, from this machine's real hostname, CPUs and memory ---------------------------
NODE="$(hostname -s)"
# `slurmd -C` prints the node line slurmd itself detects; keep its CPU layout and give SLURM
# 95 % of the memory it sees, so the node is never drained for having less than configured.
read -r CPU_LAYOUT MEM < <(slurmd -C | awk '/^NodeName=/ {
    layout = ""; mem = 0
    for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "RealMemory") mem = kv[2]
        else if (kv[1] != "UpTime") layout = layout " " $i
    }
    gsub(/^ /, "", layout); gsub(/ /, ",", layout)
    print layout, mem
}')
CPU_LAYOUT="${CPU_LAYOUT//,/ }"
MEM=$(( MEM * 95 / 100 ))

NEW_CONF="$(cat <<CONF
# Written by tests/slurm/start_cluster.sh: one node ($NODE) on loopback, no accounting.
ClusterName=positrongan
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=${POSITRONGAN_SLURMCTLD_PORT:-6817}
SlurmdPort=${POSITRONGAN_SLURMD_PORT:-6818}
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups (containers often lack a writable cgroup tree): track processes by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Cores and memory are consumable, so --cpus-per-task and --mem are enforced at scheduling.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# squeue (the status command without slurmdbd) lists a finished job for MinJobAge seconds.
MinJobAge=600
ReturnToService=2
SlurmdTimeout=60
# One GPU-type GRES backed by /dev/null (no real GPU): jobs that ask for --gpus=1 (the profile's training
# rules) are scheduled and run here, on the CPU (device: auto), as they would on a GPU node.
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 $CPU_LAYOUT RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
)"

# A pid file names a live process (not a zombie awaiting its reaper).
alive() { [[ -s "$1" ]] && [[ "$(ps -o stat= -p "$(cat "$1")" 2>/dev/null)" == [^Z]* ]]; }

GRES_CONF="$STATE/gres.conf"
# slurmd only counts a gpu GRES that names a device file; /dev/null stands in for one.
NEW_GRES="NodeName=$NODE Name=gpu File=/dev/null"

if [[ "$(cat "$CONF" 2>/dev/null)" != "$NEW_CONF" || "$(cat "$GRES_CONF" 2>/dev/null)" != "$NEW_GRES" ]]; then
    # A changed config needs fresh daemons.
    if alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; then
        scontrol shutdown >/dev/null 2>&1 || true
        for _ in $(seq 100); do alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid" || break; sleep 0.1; done
    fi
    printf '%s\n' "$NEW_CONF" >"$CONF"
    printf '%s\n' "$NEW_GRES" >"$GRES_CONF"
fi

# Daemons read gres.conf next to $SLURM_CONF, so point it at our directory.
alive "$STATE/slurmctld.pid" || SLURM_CONF="$CONF" slurmctld
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
alive "$STATE/slurmd.pid" || SLURM_CONF="$CONF" slurmd

state=""
for _ in $(seq 120); do
    state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)"
    [[ "$state" == idle || "$state" == mixed || "$state" == allocated ]] && break
    # A node left down/drained by an earlier run is returned to service.
    if [[ "$state" == down* || "$state" == drain* ]]; then
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.5
done
if [[ "$state" != idle && "$state" != mixed && "$state" != allocated ]]; then
    echo "start_cluster.sh: node $NODE is '${state:-unknown}' after 60 s; daemon logs follow" >&2
    tail -n 20 "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log >&2 || true
    exit 1
fi
echo "SLURM cluster up: node $NODE ($CPU_LAYOUT RealMemory=${MEM}M) state=$state"
echo "config: $ETC_CONF -> $CONF; daemon logs: $STATE/log/"
