# Shared by the bench scripts: starting and stopping the servers under test,
# and cleaning up. The caller defines `work` (a temp dir), `running=()`,
# `pg_db=""` and `PG_URL` before sourcing, and installs `trap cleanup EXIT`.

# die MESSAGE: prints MESSAGE prefixed with the script's name, exits 1.
die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# forget PID: removes PID from the running list.
forget() {
    local pid kept=()
    for pid in "${running[@]}"; do
        [[ "$pid" == "$1" ]] || kept+=("$pid")
    done
    running=("${kept[@]}")
}

# stop_process PID: SIGTERM, up to 15 s grace, then SIGKILL.
stop_process() {
    local pid=$1 i
    forget "$pid"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_server NAME PREFIX CMD...: runs CMD in the background and waits (30 s
# at most) for a stdout line "PREFIX http://ADDR". Sets SERVER_PID, SERVER_URL.
start_server() {
    local name=$1 prefix=$2 i line
    shift 2
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    SERVER_PID=$!
    running+=("$SERVER_PID")
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 "^$prefix http://" "$work/$name.out" 2>/dev/null || true)
        if [[ -n "$line" ]]; then
            SERVER_URL=${line#"$prefix "}
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 30 "$work/$name.err" >&2 || true
            die "$name exited before listening"
        fi
        sleep 0.1
    done
    tail -n 30 "$work/$name.err" >&2 || true
    die "$name did not print '$prefix http://…' within 30 s"
}

# field FILE KEY: the last value of KEY in a loadgen JSON line.
field() {
    sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1" | tail -n 1
}

# drop_pg_db: drops the PostgreSQL database named in pg_db, if any.
drop_pg_db() {
    if [[ -n "$pg_db" ]]; then
        psql "$PG_URL" -qX -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true
        pg_db=""
    fi
}

# cleanup: stops every child still running, drops the PostgreSQL database,
# removes the temp dir (kept with KEEP=1).
cleanup() {
    local pid
    for pid in "${running[@]}"; do
        stop_process "$pid"
    done
    drop_pg_db
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "$(basename "$0"): kept $work" >&2
    else
        rm -rf "$work"
    fi
}
