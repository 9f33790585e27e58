#!/usr/bin/env bash
# Installs everything torchclip needs on a fresh Debian 12 machine; a no-op when all is present.
# Usage: scripts/setup.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

missing=()
for p in $DEBIAN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
want_py() {  # module version-prefix
  "$py" - "$1" "$2" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
try:
    v = m.version(sys.argv[1])
except m.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v.split('+')[0] == sys.argv[2] else 1)
PY
}
pip_missing=()
want_py torch "$TORCH_VERSION" || pip_missing+=("torch==$TORCH_VERSION")
want_py torchvision "$TORCHVISION_VERSION" || pip_missing+=("torchvision==$TORCHVISION_VERSION")
want_py open_clip_torch "$OPEN_CLIP_VERSION" || pip_missing+=("open-clip-torch==$OPEN_CLIP_VERSION")
want_py safetensors "$SAFETENSORS_VERSION" || pip_missing+=("safetensors==$SAFETENSORS_VERSION")
want_py ftfy "$FTFY_VERSION" || pip_missing+=("ftfy==$FTFY_VERSION")
want_py PyYAML "$PYYAML_VERSION" || pip_missing+=("pyyaml==$PYYAML_VERSION")  # the golden scripts read our YAML
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "setup: installing Python packages: ${pip_missing[*]}"
  "$py" -m pip install -q --disable-pip-version-check "${pip_missing[@]}" "numpy<$NUMPY_MAX"
fi
# Real photos (public domain, from scikit-image's wheel, unpacked only) for the preprocessing
# parity test: open_clip's PIL pipeline and ours on the same files.
photos="$here/../data/photos"
if [ ! -f "$photos/.complete" ]; then
  echo "setup: unpacking test photos from scikit-image $SKIMAGE_PHOTOS_VERSION into data/photos"
  tmp=$(mktemp -d)
  "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" \
    "scikit-image==$SKIMAGE_PHOTOS_VERSION"
  "$py" - "$tmp" "$photos" <<'PY'
import glob, os, sys, zipfile
keep = ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png', 'hubble_deep_field.jpg',
        'retina.jpg', 'camera.png', 'coins.png', 'grass.png', 'brick.png', 'gravel.png', 'ihc.png', 'color.png']
os.makedirs(sys.argv[2], exist_ok=True)
with zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], '*.whl'))[0]) as z:
    for name in keep:
        with open(os.path.join(sys.argv[2], name), 'wb') as f:
            f.write(z.read('skimage/data/' + name))
PY
  rm -rf "$tmp"
  touch "$photos/.complete"
fi
echo "setup: ok (torch $("$py" -c 'import torch;print(torch.__version__)'))"
