# slurm_cluster.sh — a throwaway single-node Slurm cluster for tests (sourced).
#
#   . tests/slurm_cluster.sh
#   slurm_cluster_start DIR || skip_all "$SLURM_CLUSTER_WHY"
#   sbatch ...; slurm_wait JOBID [TIMEOUT_S]
#   slurm_cluster_stop            # also put it in your EXIT trap
#
# Starts munged, slurmctld and slurmd from Debian's packages (munge,
# slurmctld, slurmd, slurm-client) as root, everything under DIR: a fresh
# munge key and socket, a generated slurm.conf (this host as the only node
# with its real CPUs and memory, select/cons_tres, proctrack/linuxproc,
# task/none, no cgroups, no accounting database), state and spool folders,
# logs. Nothing under /etc or /run is touched. Exports SLURM_CONF so that
# sbatch/squeue/scontrol/srun in this shell talk to this cluster.
#
# slurm_cluster_start returns 1 with the reason in SLURM_CLUSTER_WHY when
# Slurm is not installed, not root, or the daemons do not come up; tests
# skip then. Daemons are started in the foreground (-D) in the background
# of this shell, so slurm_cluster_stop knows their process ids and stops
# exactly them.

SLURM_CLUSTER_DIR=
SLURM_CLUSTER_PIDS=
SLURM_CLUSTER_WHY=

_slurm_free_port() { # a TCP port nobody listens on, from a range above the usual ones
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return 0; fi
  done
  return 1
}

slurm_cluster_start() { # DIR
  local d=$1 host cpus mem
  SLURM_CLUSTER_WHY=
  for t in munged mungekey slurmctld slurmd sbatch squeue scontrol; do
    command -v $t >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v $t >/dev/null 2>&1 ||
      { SLURM_CLUSTER_WHY="$t not installed (deploy/install-deps.sh installs munge, slurmctld, slurmd, slurm-client)"; return 1; }
  done
  PATH=$PATH:/usr/sbin
  [ "$(id -u)" -eq 0 ] || { SLURM_CLUSTER_WHY="the test cluster's daemons run as root; not root"; return 1; }
  mkdir -p "$d"/{munge,state,spool,log} || return 1
  d=$(cd "$d" && pwd)
  SLURM_CLUSTER_DIR=$d
  chmod 700 "$d/munge"
  mungekey --create --keyfile="$d/munge/munge.key" --force 2>"$d/log/mungekey.log" ||
    { SLURM_CLUSTER_WHY="mungekey failed: $(cat "$d/log/mungekey.log")"; return 1; }
  chmod 600 "$d/munge/munge.key"
  munged -F --force --key-file="$d/munge/munge.key" --socket="$d/munge/munge.sock" \
    --pid-file="$d/munge/munged.pid" --seed-file="$d/munge/seed" --log-file="$d/log/munged.log" \
    >>"$d/log/munged.log" 2>&1 &
  SLURM_CLUSTER_PIDS="$!"
  for _ in $(seq 1 100); do [ -S "$d/munge/munge.sock" ] && break; sleep 0.05; done
  [ -S "$d/munge/munge.sock" ] || { SLURM_CLUSTER_WHY="munged did not start: $(tail -3 "$d/log/munged.log")"; slurm_cluster_stop; return 1; }

  host=$(hostname -s)
  cpus=$(nproc)
  # RealMemory a little under the machine's, so slurmd never drains the node
  mem=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  local cport dport
  cport=$(_slurm_free_port) && dport=$(_slurm_free_port) || { SLURM_CLUSTER_WHY="no free TCP port"; slurm_cluster_stop; return 1; }
  cat > "$d/slurm.conf" <<EOF
ClusterName=gltest
SlurmctldHost=$host
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge/munge.sock
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool/%n
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # no cgroups anywhere: an empty cgroup.conf keeps slurmd from probing them
  : > "$d/cgroup.conf"
  export SLURM_CONF=$d/slurm.conf
  slurmctld -D -i -f "$d/slurm.conf" >>"$d/log/slurmctld.out" 2>&1 &
  SLURM_CLUSTER_PIDS="$SLURM_CLUSTER_PIDS $!"
  slurmd -D -f "$d/slurm.conf" -N "$host" >>"$d/log/slurmd.out" 2>&1 &
  SLURM_CLUSTER_PIDS="$SLURM_CLUSTER_PIDS $!"
  # ready when the node is idle
  local state=
  for _ in $(seq 1 200); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1)
    case "$state" in idle*|mixed*|allocated*) return 0 ;; esac
    sleep 0.1
  done
  SLURM_CLUSTER_WHY="the node did not come up (state '${state:-none}'): $(tail -3 "$d/log/slurmctld.log" "$d/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"
  slurm_cluster_stop
  return 1
}

slurm_cluster_stop() {
  [ -n "$SLURM_CLUSTER_PIDS" ] || return 0
  if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
    scancel --full --quiet --user=root 2>/dev/null
  fi
  # slurmd first, then slurmctld, then munged (reverse order of start)
  local p rev=
  for p in $SLURM_CLUSTER_PIDS; do rev="$p $rev"; done
  for p in $rev; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  SLURM_CLUSTER_PIDS=
}

# slurm_wait JOBID [TIMEOUT_S]: waits until the job (every task of an
# array) has left the queue; prints its final state(s) from scontrol
# (kept MinJobAge seconds). Returns 0 if every task COMPLETED, 1 on
# another end state, 2 on timeout.
slurm_wait() {
  local job=$1 limit=${2:-60} t=0 states
  while [ $t -lt $((limit * 10)) ]; do
    if [ -z "$(squeue -h -j "$job" -t PD,R,CG,CF,S,RS,RQ,SO 2>/dev/null)" ]; then
      states=$(scontrol -o show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | sort | uniq -c | tr -s ' ')
      echo "$states"
      case "$states" in *COMPLETED*) ;; *) return 1 ;; esac
      echo "$states" | grep -qv COMPLETED && return 1
      return 0
    fi
    sleep 0.1
    t=$((t + 1))
  done
  echo "timeout"
  return 2
}
