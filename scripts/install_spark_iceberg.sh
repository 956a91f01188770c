#!/usr/bin/env bash
# Local Spark 3.5 + Apache Iceberg 1.10 for the tests that need a real Iceberg writer
# (merge-on-read deletes, MERGE/UPDATE): see tests/iceberg/README.md.
#
# Idempotent; run as root on Debian (CI runs it as root). Installs:
#   apt:  a Java runtime (if none), libjarjar-java + libasm-java (to relocate Jackson),
#         libxerial-sqlite-jdbc-java (the Iceberg JDBC catalog on SQLite, shared with
#         pyiceberg's SqlCatalog)
#   pip:  pyspark 3.5.x (4.x does not work with these jars) and snowpark-connect-deps-iceberg
#         (iceberg-spark-runtime-3.5_2.12-1.10.2.jar) into the project venv
#   jar:  $PUFFIN_CACHE_DIR/iceberg-spark-runtime-relocated.jar (default ~/.cache/puffin): the
#         runtime jar plus the Jackson it expects under org.apache.iceberg.shaded (the jar on
#         PyPI lacks it), relocated from the jackson-{core,databind,annotations,datatype-jsr310}
#         2.15.2 jars that pyspark 3.5 ships. (Every Jackson class, method and field that the
#         runtime jar refers to exists in 2.15.2; checked by reading the class files.)
#
# Environment: PUFFIN_VENV (default <repo>/.venv), PUFFIN_CACHE_DIR (default ~/.cache/puffin).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PUFFIN_VENV:-$ROOT/.venv}"
CACHE="${PUFFIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/puffin}"
OUT_JAR="$CACHE/iceberg-spark-runtime-relocated.jar"
PY="$VENV/bin/python"

log() { echo "[install_spark_iceberg] $*"; }

# --- Debian packages ---------------------------------------------------------------------
apt_pkgs=(libjarjar-java libasm-java libxerial-sqlite-jdbc-java)
command -v java >/dev/null 2>&1 || apt_pkgs+=(default-jre-headless)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for f in /usr/share/java/jarjar.jar /usr/share/java/asm-all.jar /usr/share/java/sqlite-jdbc.jar; do
    [[ -f "$f" ]] || { echo "missing $f after apt-get install" >&2; exit 1; }
done

# --- Python packages (into the project venv; pyspark 3.5 only needs py4j) ----------------
if [[ ! -x "$PY" ]]; then
    echo "no venv at $VENV (create it first, or set PUFFIN_VENV)" >&2
    exit 1
fi
if ! "$PY" - <<'EOF' 2>/dev/null
from importlib.metadata import version
assert version("pyspark").startswith("3.5."), version("pyspark")
import snowpark_connect_deps_iceberg  # noqa: F401
EOF
then
    log "pip install pyspark==3.5.* snowpark-connect-deps-iceberg"
    "$PY" -m pip install -q "pyspark==3.5.*" "snowpark-connect-deps-iceberg>=1.0.3,<2"
fi

# --- the relocated runtime jar -------------------------------------------------------------
mkdir -p "$CACHE"
"$PY" - "$OUT_JAR" <<'EOF'
"""Build iceberg-spark-runtime-relocated.jar (skipped when it is already up to date)."""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyspark
import snowpark_connect_deps_iceberg as deps

out = Path(sys.argv[1])
runtime = deps.get_jar_path("iceberg-spark-runtime-3.5_2.12-1.10.2.jar")
spark_jars = Path(pyspark.__file__).parent / "jars"
# jsr310: the shaded Arrow inside the runtime jar (ObjectMapperFactory) refers to JavaTimeModule.
JACKSON = ("core", "databind", "annotations", "datatype-jsr310")
jackson = [next(spark_jars.glob(f"jackson-{name}-2.*.jar")) for name in JACKSON]
PREFIX = "org/apache/iceberg/shaded/com/fasterxml/jackson/"
RULE = "rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1\n"

# The inputs' names and sizes identify the build; a stamp beside the jar records them.
key = hashlib.sha256(repr([(str(p), p.stat().st_size) for p in [runtime, *jackson]] + [RULE]).encode()).hexdigest()
stamp = out.with_suffix(".stamp")
if out.exists() and stamp.exists() and stamp.read_text() == key:
    print(f"[install_spark_iceberg] up to date: {out}")
    sys.exit(0)

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "rules.txt").write_text(RULE)
    relocated = []
    for jar in jackson:
        # Drop the multi-release variants (jarjar maps META-INF/versions/N/x.class onto x.class
        # and fails on the duplicate; the runtime jar is not multi-release, so they are unused),
        # module-info and service files, which would still name the unrelocated classes.
        stripped = tmp / f"stripped-{jar.name}"
        with zipfile.ZipFile(jar) as zin, zipfile.ZipFile(stripped, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                n = info.filename
                if n.startswith(("META-INF/versions/", "META-INF/services/")) or n.endswith("module-info.class"):
                    continue
                zout.writestr(info, zin.read(info))
        target = tmp / f"relocated-{jar.name}"
        subprocess.run(
            ["java", "-cp", "/usr/share/java/jarjar.jar:/usr/share/java/asm-all.jar",
             "com.tonicsystems.jarjar.Main", "process", str(tmp / "rules.txt"), str(stripped), str(target)],
            check=True,
        )
        relocated.append(target)

    partial = out.with_name(out.name + ".partial")
    added = 0
    with zipfile.ZipFile(runtime) as zin, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zout:
        names = set()
        for info in zin.infolist():
            if info.filename not in names:  # the PyPI jar holds LICENSE and NOTICE twice
                names.add(info.filename)
                zout.writestr(info, zin.read(info))
        for jar in relocated:
            with zipfile.ZipFile(jar) as zj:
                for info in zj.infolist():
                    if info.filename.startswith(PREFIX) and info.filename not in names:
                        names.add(info.filename)
                        zout.writestr(info, zj.read(info))
                        added += info.filename.endswith(".class")
    if added < 500:
        sys.exit(f"only {added} relocated Jackson classes added; expected " + "+".join(JACKSON))
    os.replace(partial, out)
    stamp.write_text(key)
    print(f"[install_spark_iceberg] built {out} (+{added} relocated Jackson classes from "
          f"{', '.join(p.name for p in jackson)})")
EOF
log "ok: $OUT_JAR"
