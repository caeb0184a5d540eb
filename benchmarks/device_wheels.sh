#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with the cp312 manylinux wheels a bare GPU machine lacks for
# benchmarks/gpu_all.sh: ray (without its 32 MB of Java jars), pydantic and the small packages
# they need that the lent H200's image does not hold. Run from the repository root on a machine
# that reaches PyPI; gpu_all.sh installs what lies in .whl/ into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
    ray==2.60.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection 'typing-extensions>=4.16' \
    jsonschema jsonschema-specifications referencing rpds-py tensorboardX
python3 - <<'PY'
"""Drop ray/jars/ (Java only) from ray's wheel, with its RECORD lines: 79 MB -> about 47 MB."""
import pathlib, zipfile
wheel = next(pathlib.Path(".whl").glob("ray-*.whl"))
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if item.filename.startswith("ray/jars/"):
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"ray/jars/"))
        dst.writestr(item, data)
slim.replace(wheel)
PY
du -ch .whl/*.whl | tail -1
