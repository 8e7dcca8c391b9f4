# Shared by the scripts: find JDK 25 and Maven, build when sources changed, find TornadoVM.
# Sourced, not run.

die() { echo "error: $*" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JAR="$ROOT/target/tornado-switch.jar"

is_jdk25() { [ -x "$1/bin/java" ] && [ -x "$1/bin/javac" ] && "$1/bin/java" -version 2>&1 | grep -qE 'version "25'; }

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
JVM_OPTS=(-XX:MaxRAMPercentage=75 --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED)
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
find_tornado || true

need_mvn() {
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) not found: install it (e.g. apt-get install maven)"
}

mvn_flags() {
  if [ -n "$TORNADO_SDK" ] && [ -z "${NO_TORNADO:-}" ]; then echo "-Dtornado.home=$TORNADO_SDK"; fi
}

# Builds the jar when it is missing or older than any source or the pom.
build_if_needed() {
  local stamp="$ROOT/target/.build-flags" flags
  [ -z "${TS_CLASSPATH:-}" ] || return 0
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
