#!/usr/bin/env bash
# The compose deployment on a private Docker engine, for `make compose-test` and the tests in
# tests/compose. Every step is idempotent: a rerun reuses the engine, the stand-in base images
# and the build cache, so only what changed is rebuilt.
#
#   docker/e2e.sh prepare   # engine + compose v2 + stand-in bases (what `build` needs)
#   docker/e2e.sh build     # prepare, then build the serve and the train image
#   docker/e2e.sh env       # the variables that point `docker` and `docker-compose` here
#   docker/e2e.sh stop      # stop the private engine (its data root stays for the next run)
#
# Exit status 77 means "this machine cannot run an engine" (not root, or no apt-get to install
# one); the reason is the last line on stderr. Anything else non-zero is a real failure.
#
# No registry is reachable here (no Docker Hub), so the two base images the Dockerfiles name
# are stand-ins built with debootstrap from the machine's own Debian mirror and tagged with the
# real names: python:3.12-slim-bookworm (bookworm's python3 3.11 + venv) and nginx:1.27-alpine
# (bookworm's nginx-light). With a reachable registry, set FCN_STANDINS=0 to pull the real ones.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${FCN_DOCKER_STATE:-/var/lib/fcn-docker}
RUN_DIR=${FCN_DOCKER_RUN:-/run/fcn-docker}
SOCK="$RUN_DIR/docker.sock"
# FCN_DOCKER_HOST: use that engine (e.g. unix:///var/run/docker.sock) instead of a private one.
export DOCKER_HOST="${FCN_DOCKER_HOST:-unix://$SOCK}"
COMPOSE="$STATE/compose/usr/libexec/docker/cli-plugins/docker-compose"
PYTHON_TAG=python:3.12-slim-bookworm
NGINX_TAG=nginx:1.27-alpine
# Heavy steps (debootstrap, image builds) queue behind other heavy work on a shared machine.
LOCK=${FCN_HEAVY_LOCK:-/tmp/fcn-heavy.lock}

log() { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cannot() { log "cannot run a Docker engine here: $*"; exit 77; }
heavy() { if command -v flock >/dev/null; then flock "$LOCK" "$@"; else "$@"; fi; }

debian_mirror() {
    # The mirror this machine's apt already uses (deb822 .sources first, then sources.list).
    local uri
    uri=$(grep -h -m1 -E '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        head -n1 | awk '{print $2}') || true
    if [ -z "$uri" ]; then
        uri=$(grep -h -m1 -E '^deb .*/debian/? ' /etc/apt/sources.list 2>/dev/null |
            head -n1 | awk '{print $2}') || true
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

install_packages() {
    # docker.io (engine 20.10 + containerd + runc) and debootstrap from the machine's apt.
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || cannot "not root, and ${missing[*]} missing"
    command -v apt-get >/dev/null || cannot "no apt-get to install ${missing[*]}"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" iptables >/dev/null
}

install_compose() {
    # Compose v2: bookworm ships only 1.29, which rejects the file's top-level `name:`. Debian
    # trixie packages v2 (a static Go binary needing libc6 >= 2.34): fetch that one .deb with a
    # private apt state, never touching the system's sources, and unpack it.
    [ -x "$COMPOSE" ] && return 0
    local apt="$STATE/apt-trixie"
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs"
    echo "deb $(debian_mirror) trixie main" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::State::status=/dev/null"
        -o "APT::Get::List-Cleanup=0")
    log "fetching compose v2 (Debian trixie's docker-compose)"
    apt-get -qq "${opts[@]}" -o APT::Sandbox::User=root update
    (cd "$apt/debs" && apt-get -qq "${opts[@]}" -o APT::Sandbox::User=root download docker-compose)
    dpkg -x "$apt"/debs/docker-compose_*.deb "$STATE/compose"
    rm -rf "$apt/lists"
    "$COMPOSE" version >&2
}

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
    engine_answers && return 0
    if [ -n "${FCN_DOCKER_HOST:-}" ]; then log "no engine answers at $FCN_DOCKER_HOST"; exit 1; fi
    [ "$(id -u)" -eq 0 ] || cannot "not root, so no private dockerd (FCN_DOCKER_HOST names one)"
    mkdir -p "$STATE/data" "$RUN_DIR"
    log "starting a private dockerd (data root $STATE/data, socket $SOCK)"
    # setsid: the engine outlives this script (and the test session), so reruns reuse it.
    setsid dockerd --data-root "$STATE/data" --exec-root "$RUN_DIR/exec" -H "$DOCKER_HOST" \
        --pidfile "$RUN_DIR/dockerd.pid" --storage-driver overlay2 \
        >>"$STATE/dockerd.log" 2>&1 </dev/null &
    local i
    for i in $(seq 1 60); do
        engine_answers && { log "engine $(docker version --format '{{.Server.Version}}') ready"; return 0; }
        sleep 0.5
    done
    tail -n 20 "$STATE/dockerd.log" >&2
    log "dockerd did not answer within 30 s"
    exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

debootstrap_image() {
    # debootstrap_image TAG TARBALL PACKAGES CHANGES...: a minbase bookworm root filesystem with
    # PACKAGES, cached as a tarball under $STATE so an emptied engine re-imports in seconds.
    local tag=$1 tarball=$2 packages=$3
    shift 3
    if [ ! -s "$tarball" ]; then
        local root
        root=$(mktemp -d "$STATE/rootfs.XXXXXX")
        log "debootstrap for $tag ($packages)"
        heavy debootstrap --variant=minbase --include="$packages" bookworm "$root" \
            "$(debian_mirror)" >"$STATE/debootstrap.log" 2>&1 ||
            { tail -n 20 "$STATE/debootstrap.log" >&2; exit 1; }
        # What a slim image leaves out: apt lists, docs, man pages, logs.
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
            "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/* \
            "$root"/var/log/*.log
        tar -C "$root" -c . >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    log "importing $tag"
    local change_args=()
    for change in "$@"; do change_args+=(--change "$change"); done
    docker import "${change_args[@]}" "$tarball" "$tag" >/dev/null
}

nginx_image() {
    # The nginx stand-in: bookworm's nginx-light added to the python stand-in (apt in a container
    # takes seconds; a second debootstrap minutes), cached as a tarball like the base.
    local tarball="$STATE/cache/nginx.tar"
    if [ ! -s "$tarball" ]; then
        log "building the $NGINX_TAG stand-in (nginx-light)"
        docker rm -f fcn-nginx-standin >/dev/null 2>&1 || true
        heavy docker run --name fcn-nginx-standin --network host "$PYTHON_TAG" sh -ec '
            apt-get -qq update
            DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends \
                nginx-light wget >/dev/null
            rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*' >&2
        docker export fcn-nginx-standin >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
        docker rm fcn-nginx-standin >/dev/null
    fi
    docker import --change 'CMD ["nginx", "-g", "daemon off;"]' \
        "$tarball" "$NGINX_TAG" >/dev/null
}

prepare_bases() {
    [ "${FCN_STANDINS:-1}" = 1 ] || return 0
    mkdir -p "$STATE/cache"
    have_image "$PYTHON_TAG" || debootstrap_image "$PYTHON_TAG" "$STATE/cache/python.tar" \
        python3,python3-venv,python-is-python3,ca-certificates \
        'ENV LANG=C.UTF-8' 'CMD ["python3"]'
    have_image "$NGINX_TAG" || nginx_image
}

build_images() {
    # Builds reach the host's loopback (the local torch index) and trust the host's CA bundle,
    # which holds any TLS-intercepting proxy's CA where there is one.
    export FCN_BUILD_NETWORK=host
    if [ -z "${FCN_CA_BUNDLE:-}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        export FCN_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
    fi
    local server=""
    if [ -z "${TORCH_INDEX_URL:-}" ]; then
        rm -f "$STATE/torch.env"
        python3 docker/local_index.py --env-file "$STATE/torch.env" &
        server=$!
        local i
        for i in $(seq 1 100); do
            [ -s "$STATE/torch.env" ] || ! kill -0 "$server" 2>/dev/null && break
            sleep 0.2
        done
        if [ -s "$STATE/torch.env" ]; then
            set -a && . "$STATE/torch.env" && set +a
            log "torch for the train image from the local index $TORCH_INDEX_URL ($TORCH_REQUIREMENTS)"
        else
            local code=0
            wait "$server" || code=$?
            # 3: no local index holds torch, so the Dockerfile's default index applies
            [ $code -eq 3 ] || { log "docker/local_index.py failed ($code)"; exit 1; }
            server=""
        fi
    fi
    # Both images at once: the serve build waits on PyPI while the train build unpacks torch.
    local start=$SECONDS status=0
    heavy "$COMPOSE" --profile train build api train || status=$?
    [ -n "$server" ] && kill "$server" 2>/dev/null
    [ $status -eq 0 ] || exit $status
    log "images built in $((SECONDS - start)) s"
    docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'fcnseg-*' >&2
}

prepare() {
    install_packages
    mkdir -p "$STATE"
    install_compose
    start_engine
    prepare_bases
}

case "${1:-prepare}" in
prepare) prepare ;;
build)
    prepare
    build_images
    ;;
env)
    echo "DOCKER_HOST=$DOCKER_HOST"
    echo "FCN_COMPOSE=$COMPOSE"
    ;;
stop)
    if [ -f "$RUN_DIR/dockerd.pid" ]; then
        pid=$(cat "$RUN_DIR/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    ;;
*)
    echo "usage: $0 prepare|env|stop" >&2
    exit 2
    ;;
esac
