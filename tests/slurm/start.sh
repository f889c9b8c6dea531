#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm executor's tests (`.ci/run` starts it
# as root; `stop.sh` stops it). Writes /etc/slurm/slurm.conf with this machine's CPUs and
# memory, starts munged, slurmctld and slurmd, and waits until the node is idle.
set -euo pipefail
command -v slurmctld >/dev/null || { echo "slurm-wlm is not installed" >&2; exit 1; }
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
cat > /etc/slurm/slurm.conf <<CONF
# written by tests/slurm/start.sh: one node, no accounting
ClusterName=tokenmill
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MaxArraySize=1001
DependencyParameters=kill_invalid_depend
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
resumed=0
for _ in $(seq 1 60); do
  state=$(sinfo -h -o '%t' 2>/dev/null || true)
  if [ "$state" = idle ]; then
    sinfo
    exit 0
  fi
  # a node drained or down in the saved state of an earlier run (its spool disk was full, a
  # daemon was killed) stays so across restarts: return it to service once, saying why it was out
  if [ $resumed = 0 ] && printf '%s' "$state" | grep -Eq '^(drain|drng|drained|down)'; then
    echo "the node was $state ($(sinfo -h -R -o '%E' 2>/dev/null || true)); resuming it" >&2
    scontrol update NodeName="$host" State=RESUME || true
    resumed=1
  fi
  sleep 1
done
echo "the Slurm node did not become idle:" >&2
sinfo >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
