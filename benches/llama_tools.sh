#!/usr/bin/env bash
# Builds llama.cpp's own benchmark tools (llama-bench, llama-batched-bench) and its
# OpenAI-compatible server (llama-server) from the llama.cpp source vendored in the
# llama-cpp-sys-2 crate kefu links, built as llama.cpp's own CMake builds them by default
# (Release, GGML_NATIVE as kefu's .cargo/config.toml sets target-cpu=native, OpenMP on,
# static libraries), so benches/model.sh and benches/chat_load.py compare kefu with what a
# llama.cpp user gets. kefu itself builds the same source without OpenMP (its threads are
# sized to the free cores: docs/model.md, "Threads").
# Output: target/llama-tools/bin/{llama-bench,llama-batched-bench,llama-server}.
# Run: benches/llama_tools.sh (a no-op when the three binaries exist for the same crate);
# the first build takes several minutes on 2 cores. Env: LLAMA_TOOLS_JOBS (make -j, default
# nproc).
#
# The crate ships llama.cpp without its tools/ sources, so the tools' sources are taken from
# the llama-cpp-python source package (it vendors all of llama.cpp), fetched once with
# `pip download --no-binary :all:` from the configured package index and cached as
# target/llama-tools/llama_cpp_python-$LCP_VERSION.tar.gz. Only these are used, compiled
# against the crate's own library and common code:
#   tools/llama-bench, tools/batched-bench: the two benchmark tools;
#   tools/server: llama-server's sources (its tests/ and bench/ are left out);
#   tools/ui/{CMakeLists.txt,ui.h.in,ui.cpp.in} and scripts/ui-assets.cmake: the web UI's
#     embedding step only. With LLAMA_BUILD_UI=OFF and LLAMA_USE_PREBUILT_UI=OFF (llama.cpp's
#     own switches) it neither runs npm nor downloads a prebuilt UI, and embeds an empty asset
#     table: the server answers the API, and has no web page at /.
# The sdist's llama.cpp is one minor version older than the crate's (their llama.h differ
# only in two version macros). llama-server compiles against the crate's common/ and mtmd
# (multimodal) code but for two calls, adapted below (`adapt`; the build stops if either line
# is not found), both off the path of a text model's chat:
#   server-context.cpp: the crate's mtmd_get_memory_usage() returns a struct whose
#     backend_mem_usage is the map the sdist's server expects (`.backend_mem_usage` is
#     appended); it runs only with a multimodal projector (--mmproj);
#   server-mcp.cpp: fs_open_ifstream(), a helper the sdist's common/ has and the crate's
#     lacks, is on Linux `std::ifstream(name, mode)`, which replaces it; it reads the MCP
#     servers' config file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/llama-tools"
LCP_VERSION=0.3.36
tools="llama-bench llama-batched-bench llama-server"

sys_dir=$(cargo metadata --format-version 1 --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="llama-cpp-sys-2").rsplit("/",1)[0])')
present=1
for t in $tools; do [ -x "$out/bin/$t" ] || present=0; done
if [ "$present" = 1 ] && [ "$(cat "$out/source" 2>/dev/null)" = "$sys_dir" ]; then
  echo "llama tools present in $out/bin"; exit 0
fi
mkdir -p "$out"
rm -rf "$out/src" "$out/build"
cp -r "$sys_dir/llama.cpp" "$out/src"
chmod -R u+w "$out/src"

tarball="$out/llama_cpp_python-$LCP_VERSION.tar.gz"
if [ ! -f "$tarball" ]; then
  # The source package only (no wheel, no dependencies), from whatever index pip is set to.
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$LCP_VERSION" -d "$out"
fi
[ -f "$tarball" ] || { echo "llama_tools.sh: pip did not leave $tarball" >&2; exit 1; }
vendored="llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
rm -rf "$out/llama_cpp_python-$LCP_VERSION"
tar -xzf "$tarball" -C "$out" --exclude="$vendored/tools/server/tests" --exclude="$vendored/tools/server/bench" \
  "$vendored/tools/llama-bench" "$vendored/tools/batched-bench" "$vendored/tools/server" \
  "$vendored/tools/ui/CMakeLists.txt" "$vendored/tools/ui/ui.h.in" "$vendored/tools/ui/ui.cpp.in" \
  "$vendored/scripts/ui-assets.cmake"
for tool in llama-bench batched-bench server ui; do
  rm -rf "$out/src/tools/$tool"
  mv "$out/$vendored/tools/$tool" "$out/src/tools/$tool"
done
# adapt FILE FROM TO: replaces the line's text FROM by TO in the server's FILE, or fails.
adapt() {
  local file="$out/src/tools/server/$1"
  grep -qF "$2" "$file" || { echo "llama_tools.sh: $file has no \`$2\`: update the adaptation" >&2; exit 1; }
  python3 - "$file" "$2" "$3" <<'PY'
import sys, pathlib
path, old, new = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
path.write_text(path.read_text().replace(old, new))
PY
}
adapt server-context.cpp 'mtmd_get_memory_usage(mmproj_path.c_str(), mparams);' \
  'mtmd_get_memory_usage(mmproj_path.c_str(), mparams).backend_mem_usage;'
adapt server-mcp.cpp 'std::ifstream f = fs_open_ifstream(params.mcp_servers_config, std::ios::in);' \
  'std::ifstream f(params.mcp_servers_config, std::ios::in);'
mkdir -p "$out/src/scripts"
mv "$out/$vendored/scripts/ui-assets.cmake" "$out/src/scripts/"
rm -rf "$out/llama_cpp_python-$LCP_VERSION"
# Only the tools built here; the server needs mtmd (multimodal, in the crate) and the ui stub.
printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\n%s\n' \
  "$(printf 'add_subdirectory(%s)\n' batched-bench llama-bench mtmd ui server)" > "$out/src/tools/CMakeLists.txt"

cmake -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_APP=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build "$out/build" -j"${LLAMA_TOOLS_JOBS:-$(nproc)}" --target $tools
mkdir -p "$out/bin"
for t in $tools; do cp "$out/build/bin/$t" "$out/bin/"; done
echo "$sys_dir" > "$out/source"
echo "llama tools built in $out/bin"
