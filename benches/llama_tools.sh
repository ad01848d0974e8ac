#!/usr/bin/env bash
# Builds llama.cpp's own benchmark tools (llama-bench, llama-batched-bench) from the
# llama.cpp source vendored in the llama-cpp-sys-2 crate kefu links, with the flags that
# crate's build script uses for kefu (Release, GGML_NATIVE because .cargo/config.toml
# sets target-cpu=native, OpenMP on, static libraries), so benches/model.sh compares
# like with like. Output: target/llama-tools/bin/{llama-bench,llama-batched-bench}.
#
# The crate ships llama.cpp without its tools/ sources, so the two tools' .cpp files are
# taken from the llama-cpp-python source package on PyPI (it vendors all of llama.cpp);
# only those two files are used, compiled against the crate's library and common code.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/llama-tools"
LCP_VERSION=0.3.36

sys_dir=$(cargo metadata --format-version 1 --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="llama-cpp-sys-2").rsplit("/",1)[0])')
if [ -x "$out/bin/llama-bench" ] && [ -x "$out/bin/llama-batched-bench" ] && [ "$(cat "$out/source" 2>/dev/null)" = "$sys_dir" ]; then
  echo "llama tools present in $out/bin"; exit 0
fi
mkdir -p "$out"
rm -rf "$out/src" "$out/build"
cp -r "$sys_dir/llama.cpp" "$out/src"
chmod -R u+w "$out/src"

tarball="$out/llama_cpp_python-$LCP_VERSION.tar.gz"
if [ ! -f "$tarball" ]; then
  # `pip download` of an sdist also builds its metadata (slow, needs a compiler); the
  # JSON API of the configured index gives the file's URL directly.
  url=$(python3 - "$LCP_VERSION" <<'PY'
import json, sys, urllib.request, subprocess
index = subprocess.run(["python3", "-m", "pip", "config", "get", "global.index-url"],
                       capture_output=True, text=True).stdout.strip() or "https://pypi.org/simple"
base = index.rstrip("/").removesuffix("/simple")
meta = json.load(urllib.request.urlopen(f"{base}/pypi/llama-cpp-python/{sys.argv[1]}/json"))
print(next(u["url"] for u in meta["urls"] if u["packagetype"] == "sdist"))
PY
)
  curl -fsSL -o "$tarball" "$url"
fi
for tool in llama-bench batched-bench; do
  rm -rf "$out/src/tools/$tool"
  tar -xzf "$tarball" -C "$out" "llama_cpp_python-$LCP_VERSION/vendor/llama.cpp/tools/$tool"
  mv "$out/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp/tools/$tool" "$out/src/tools/$tool"
done
rm -rf "$out/llama_cpp_python-$LCP_VERSION"
printf 'llama_add_compile_flags()\nadd_subdirectory(batched-bench)\nadd_subdirectory(llama-bench)\n' > "$out/src/tools/CMakeLists.txt"

cmake -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_APP=OFF >/dev/null
cmake --build "$out/build" -j"$(nproc)" --target llama-bench llama-batched-bench
mkdir -p "$out/bin"
cp "$out/build/bin/llama-bench" "$out/build/bin/llama-batched-bench" "$out/bin/"
echo "$sys_dir" > "$out/source"
echo "llama tools built in $out/bin"
