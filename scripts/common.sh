# Shared by the scripts: find JDK 25 and Maven, build when sources changed, find TornadoVM.
# Sourced, not run.

die() { echo "error: $*" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JAR="$ROOT/target/tornado-switch.jar"
# A GPU run kit (scripts/gpu-kit) has its own Java runtime (no javac) and TornadoVM, and builds nothing.
TS_KIT=""
[ ! -f "$ROOT/kit.env" ] || . "$ROOT/kit.env"

is_jdk25() { [ -x "$1/bin/java" ] && { [ -n "$TS_KIT" ] || [ -x "$1/bin/javac" ]; } && "$1/bin/java" -version 2>&1 | grep -qE 'version "25'; }

find_jdk() {
  if [ -n "${JAVA_HOME:-}" ] && is_jdk25 "$JAVA_HOME"; then return; fi
  local d
  for d in /usr/lib/jvm/*25* /usr/lib/jvm/*-25-* /opt/*jdk*25*; do
    if is_jdk25 "$d"; then export JAVA_HOME="$d"; return; fi
  done
  die "JDK 25 not found: set JAVA_HOME to a JDK 25 (e.g. Temurin 25) or install one under /usr/lib/jvm${JAVA_HOME:+ (JAVA_HOME=$JAVA_HOME is not a JDK 25)}"
}

find_jdk
export PATH="$JAVA_HOME/bin:$PATH"
# JVM flags of every run: the Vector API kernels need the incubator module (without it the JVM
# backend falls back to scalar loops). The heap defaults to 75% of the machine's memory
# (MaxRAMPercentage); JAVA_OPTS comes last and overrides it, e.g. JAVA_OPTS=-Xmx40g. A model that
# needs more than the heap is refused before it is built, with a line saying how much it needs.
# -XX:Tier3DelayOn: while C2's queue is long, HotSpot compiles hot methods at tier 2, which keeps no type
# profile, and C2 later compiles them from that; a Vector API call whose vector or shuffle class only a
# profile could tell is then not intrinsified, and every vector of that kernel is an object for the
# rest of the run. On 2 cores that hit a LayerNorm row kernel in about 1 start in 4: 53 MB allocated a
# training step, GCs, 10-20 % slower. A huge threshold makes tier 2 rare (not impossible: it was still
# seen with it), and the kernels keep their shuffles in constants (VectorGemm.hsum) so that tier 2 does
# not hurt them; the 64-expert bench still boxed in 1 start of 20 after both.
JVM_OPTS=(-XX:MaxRAMPercentage=75 -XX:Tier3DelayOn=100000 --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED)
# shellcheck disable=SC2206 # JAVA_OPTS is a list of flags, split on spaces like the java launcher's
[ -z "${JAVA_OPTS:-}" ] || JVM_OPTS+=(${JAVA_OPTS})
# The JVM warns on every start that an incubator module is in use; the filter drops that one line
# (and ignores Ctrl-C, so that the program's own messages after an interrupt still get through).
quiet_incubator() { trap '' INT; grep -v --line-buffered 'Using incubator modules' >&2; }
# TS_CLASSPATH (set by tests that run the scripts from inside `mvn package`, before the jar exists):
# run the classes on that class path instead of the jar, and never build.
if [ -n "${TS_CLASSPATH:-}" ]; then
  run_jar() { "$JAVA_HOME/bin/java" "${JVM_OPTS[@]}" -cp "$TS_CLASSPATH" org.tornadoswitch.Main "$@" 2> >(quiet_incubator); }
else
  run_jar() { "$JAVA_HOME/bin/java" "${JVM_OPTS[@]}" -jar "$JAR" "$@" 2> >(quiet_incubator); }
fi
# Maven on JDK 25 prints warnings about its own libraries' use of Unsafe; these flags quiet them.
export MAVEN_OPTS="${MAVEN_OPTS:---enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow}"

# TornadoVM's SDK: TORNADOVM_HOME, else the `tornado` launcher on PATH, else a conventional place.
find_tornado() {
  local c
  for c in "${TORNADOVM_HOME:-}" \
           "$(command -v tornado >/dev/null 2>&1 && dirname "$(dirname "$(readlink -f "$(command -v tornado)")")")" \
           /opt/tornadovm/sdk /tmp/tornadovm/sdk "$HOME/TornadoVM/bin/sdk"; do
    if [ -n "$c" ] && [ -x "$c/bin/tornado" ] && [ -d "$c/share/java/tornado" ]; then
      TORNADO_SDK="$(readlink -f "$c")"; return 0
    fi
  done
  return 1
}
TORNADO_SDK=""
[ -n "${NO_TORNADO:-}" ] || find_tornado || true

# Every TornadoVM run (scripts/run-tornado, the TornadoVM tests, gpu-check) starts with these.
# Kernel caches, all under TORNADO_SWITCH_CACHE (default ~/.cache/tornado-switch, never in the
# repository; delete it for a cold start): PoCL keeps the programs it compiled (pocl/), CUDA the GPU
# code it made from PTX (cuda/). TornadoVM 5.2.0 has no reusable code cache of its own for CPUs and
# GPUs (its precompiled-binary option is for FPGAs only) and recompiles every task's Java bytecode at
# every start; on OpenCL devices the backend keeps the OpenCL C TornadoVM generated for each task
# (kernels/, see KernelCache) and builds later starts' tasks from it as prebuilt tasks.
# TORNADO_KERNEL_CACHE=0 turns that off (-Dtornadoswitch.kernelCache=false); TORNADO_KERNEL_CACHE_DIR
# moves it. TornadoVM writes its kernel dumps under TORNADOVM_HOME, which the JVM needs to see.
tornado_env() {
  local cache="${TORNADO_SWITCH_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/tornado-switch}"
  export POCL_KERNEL_CACHE="${POCL_KERNEL_CACHE:-1}" POCL_CACHE_DIR="${POCL_CACHE_DIR:-$cache/pocl}"
  export CUDA_CACHE_PATH="${CUDA_CACHE_PATH:-$cache/cuda}" CUDA_CACHE_MAXSIZE="${CUDA_CACHE_MAXSIZE:-1073741824}"
  mkdir -p "$POCL_CACHE_DIR" "$CUDA_CACHE_PATH" 2>/dev/null || true
  [ -z "$TORNADO_SDK" ] || export TORNADOVM_HOME="${TORNADOVM_HOME:-$TORNADO_SDK}"
  TORNADO_RUN_OPTS+=("-Dtornadoswitch.kernelCache.dir=${TORNADO_KERNEL_CACHE_DIR:-$cache/kernels}")
  case "${TORNADO_KERNEL_CACHE:-1}" in
    0|false|off) TORNADO_RUN_OPTS+=(-Dtornadoswitch.kernelCache=false) ;;
  esac
}
# TornadoVM 5.2.0 clears every wait-list row of a graph (tornado.max.events ints each, 32,768 by
# default: 128 KiB per event slot) at every execute, although a row holds only the events recorded
# between two barriers of one graph, and none at all unless tornado.vm.deps is on. 1024 covers any
# graph of up to 1024 tasks and transfers; TORNADO_MAX_EVENTS overrides it.
# The backward graphs' task code outgrows TornadoVM's 4 KiB bytecode default; TornadoBackend raises it
# too, but a run that starts TornadoVM before the backend (the kernel tests) needs it from the start.
TORNADO_RUN_OPTS=("-Dtornado.max.events=${TORNADO_MAX_EVENTS:-1024}" -Dtornado.tvm.maxbytecodesize=262144)

# True when a command line asks for the TornadoVM backend (--backend tornado) or lists its devices:
# scripts/run then starts it through TornadoVM's launcher (scripts/run-tornado).
wants_tornado() {
  [ "${1:-}" = devices ] && return 0
  local prev="" a
  for a in "$@"; do
    if [ "$a" = --backend=tornado ] || { [ "$prev" = --backend ] && [ "$a" = tornado ]; }; then return 0; fi
    prev="$a"
  done
  return 1
}

need_mvn() {
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) not found: install it (e.g. apt-get install maven)"
}

mvn_flags() {
  if [ -n "$TORNADO_SDK" ] && [ -z "${NO_TORNADO:-}" ]; then echo "-Dtornado.home=$TORNADO_SDK"; fi
}

# Builds the jar when it is missing or older than any source or the pom.
build_if_needed() {
  local stamp="$ROOT/target/.build-flags" flags
  [ -z "${TS_CLASSPATH:-}" ] && [ -z "$TS_KIT" ] || return 0
  flags="$(mvn_flags)"
  if [ -f "$JAR" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$flags" ] && \
     [ -z "$(find "$ROOT/src/main" "$ROOT/tornado-tasks/src/main" "$ROOT/pom.xml" -newer "$JAR" -type f 2>/dev/null | head -n 1)" ]; then
    return
  fi
  need_mvn
  echo "building tornado-switch${flags:+ with TornadoVM ($TORNADO_SDK)} ..." >&2
  (cd "$ROOT" && mvn -q -B -Dstyle.color=never package -DskipTests $flags) || die "build failed"
  echo "$flags" > "$stamp"
}
