#!/usr/bin/env bash
# Builds markco's container images.
#
#   images/build.sh [--online] [--force] [IMAGE...]     IMAGE: base node-base runtime runtime-gpu editor-lite
#                                                        (default: base node-base runtime runtime-gpu editor-lite)
#
# Offline (the default; no container registry is needed): each Containerfile's public FROM is replaced
# with a locally built base (`podman build --from`), Python wheels are downloaded on this machine and
# put in the build context, and the build runs with --network none, so it cannot reach anything.
# Online: the public FROM images and PyPI are used as written.
#
# An image carries a label with the hash of its recipe (build context, Containerfile, base image id);
# a build whose recipe has not changed is skipped, so running this again takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache=${MARKCO_IMAGE_CACHE:-$root/.markco/cache/images}
mode=offline
force=0
images=()
for arg in "$@"; do
  case "$arg" in
    --online) mode=online ;;
    --force) force=1 ;;
    base|node-base|runtime|runtime-gpu|runtime-standin|editor-lite) images+=("$arg") ;;
    *) echo "images/build.sh: unknown argument '$arg' (images: base node-base runtime runtime-gpu runtime-standin editor-lite; flags: --online --force)" >&2; exit 2 ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=(base node-base runtime runtime-gpu runtime-standin editor-lite)

BASE_IMAGE=${MARKCO_BASE_IMAGE:-localhost/markco-base:bookworm}
NODE_BASE_IMAGE=localhost/markco-node:20-bookworm
RUNTIME_IMAGE=${MARKCO_RUNTIME_IMAGE:-localhost/markco-runtime:0.4.2}
RUNTIME_GPU_IMAGE=${MARKCO_RUNTIME_GPU_IMAGE:-localhost/markco-runtime-gpu:0.4.2}
EDITOR_LITE_IMAGE=${MARKCO_EDITOR_LITE_IMAGE:-localhost/markco-editor-lite:0.1}
RUNTIME_STANDIN_IMAGE=${MARKCO_RUNTIME_STANDIN_IMAGE:-localhost/markco-runtime-standin:0.1}

say() { echo "[images] $*" >&2; }

# Wheels for the runtime's pinned requirements, for CPython 3.11 on x86_64 (the local base's Python),
# cached by the requirements' hash.
runtime_wheels() {
  local req="$here/runtime/requirements.txt"
  local dir="$cache/wheels-$(sha256sum "$req" | cut -c1-16)"
  if [ ! -f "$dir/.complete" ]; then
    say "downloading the runtime's wheels"
    rm -rf "$dir" && mkdir -p "$dir"
    local pip=python3
    [ -x "$root/.markco/tools/venv/bin/python" ] && pip="$root/.markco/tools/venv/bin/python"
    "$pip" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --platform any \
      -r "$req" -d "$dir" 2> >(grep -v "^WARNING: Location" >&2)
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# build NAME TAG CONTAINERFILE CONTEXT OFFLINE_FROM [always]   (always: FROM is replaced online too)
build() {
  local name=$1 tag=$2 containerfile=$3 context=$4 offline_from=$5 from_always=${6:-}
  local from_args=() from_id=public
  if [ -n "$offline_from" ] && { [ "$mode" = offline ] || [ "$from_always" = always ]; }; then
    from_id=$(podman image inspect --format '{{.Id}}' "$offline_from")
    from_args=(--from "$offline_from")
    [ "$mode" = offline ] && from_args+=(--network none)
    [ -n "${GPU_PACKAGES:-}" ] && from_args+=(--build-arg "GPU_PACKAGES=$GPU_PACKAGES")
  fi
  local recipe
  recipe=$( { (cd "$context" && find . -type f ! -path './wheels/*' -print0 | sort -z | xargs -0 sha256sum);
              sha256sum < "$containerfile"; echo "$mode $from_id ${GPU_PACKAGES:-}"; } | sha256sum | cut -c1-16)
  if [ "$force" = 0 ] && podman image exists "$tag" \
    && [ "$(podman image inspect --format '{{index .Labels "ai.markco.recipe"}}' "$tag")" = "$recipe" ]; then
    return 0
  fi
  say "building $name as $tag ($mode)"
  local started=$SECONDS
  podman build --quiet --pull=never "${from_args[@]}" --label "ai.markco.recipe=$recipe" \
    -f "$containerfile" -t "$tag" "$context" >/dev/null
  say "built $name in $((SECONDS - started)) s"
}

work=$(mktemp -d /var/tmp/markco-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

for image in "${images[@]}"; do
  case "$image" in
    base)
      "$here/base/build.sh"
      ;;
    node-base)
      [ "$mode" = offline ] || continue
      ctx="$work/node-base" && mkdir -p "$ctx"
      node_bin=$(readlink -f "$(command -v node)")
      cp "$node_bin" "$ctx/node"
      build node-base "$NODE_BASE_IMAGE" "$here/node-base/Containerfile" "$ctx" "$BASE_IMAGE"
      ;;
    runtime|runtime-gpu)
      ctx="$work/$image" && mkdir -p "$ctx"
      cp "$here/runtime/requirements.txt" "$here/runtime/start-runtime.sh" "$here/runtime/install-runtime.sh" "$ctx/"
      if [ "$mode" = offline ]; then cp -r "$(runtime_wheels)" "$ctx/wheels"; rm -f "$ctx/wheels/.complete"; fi
      if [ "$image" = runtime ]; then
        build runtime "$RUNTIME_IMAGE" "$here/runtime/Containerfile" "$ctx" "$BASE_IMAGE"
      else
        # Always on top of the runtime image, online too: a checkpoint must restore on either (docs/gpu.md).
        podman image exists "$RUNTIME_IMAGE" || "$0" $([ "$mode" = online ] && echo --online) runtime
        build runtime-gpu "$RUNTIME_GPU_IMAGE" "$here/runtime-gpu/Containerfile" "$ctx" "$RUNTIME_IMAGE" always
      fi
      ;;
    runtime-standin)
      ctx="$work/runtime-standin" && mkdir -p "$ctx"
      cp "$here/runtime-standin/mrp-standin.py" "$ctx/"
      build runtime-standin "$RUNTIME_STANDIN_IMAGE" "$here/runtime-standin/Containerfile" "$ctx" "$BASE_IMAGE"
      ;;
    editor-lite)
      ctx="$work/editor-lite" && mkdir -p "$ctx"
      "$root/node_modules/.bin/esbuild" "$here/editor-lite/main.ts" --bundle --platform=node --format=cjs \
        --target=node20 --log-level=warning --outfile="$ctx/server.cjs"
      build editor-lite "$EDITOR_LITE_IMAGE" "$here/editor-lite/Containerfile" "$ctx" "$NODE_BASE_IMAGE"
      ;;
  esac
done
