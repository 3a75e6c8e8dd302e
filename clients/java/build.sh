#!/usr/bin/env bash
# Builds the Java client with plain javac against Debian's libthrift-java and, for discovery,
# its ZooKeeper client (apt-get install libthrift-java libzookeeper-java; tested with thrift
# 0.16.0 and ZooKeeper 3.8.0):
#   clients/java/build.sh                       build/kestrel-client.jar
#   clients/java/build.sh test                  build, then test against real servers
#   clients/java/build.sh example HOST:PORT S   round trips per second
set -euo pipefail
cd "$(dirname "$0")"
j=/usr/share/java
deps=$j/thrift.jar:$j/zookeeper.jar:$j/zookeeper-jute.jar:$j/slf4j-api.jar:$j/slf4j-nop.jar
[ -f $j/thrift.jar ] || { echo "libthrift-java missing: apt-get install -y libthrift-java" >&2; exit 2; }
[ -f $j/zookeeper.jar ] || { echo "libzookeeper-java missing: apt-get install -y libzookeeper-java" >&2; exit 2; }
rm -rf build
mkdir -p build/classes
# The stubs idl/generate.sh writes into gen/java, then the client.
javac -nowarn -d build/classes -cp "$deps" $(find ../../gen/java src/main/java -name '*.java')
jar cf build/kestrel-client.jar -C build/classes .
case "${1:-}" in
  test)
    mkdir -p build/test
    javac -d build/test -cp "$deps:build/kestrel-client.jar" $(find src/test/java -name '*.java')
    java -cp "$deps:build/kestrel-client.jar:build/test" net.lag.kestrel.client.KestrelClientTest
    ;;
  example)
    mkdir -p build/examples
    javac -d build/examples -cp "$deps:build/kestrel-client.jar" examples/RoundTrip.java
    java -cp "$deps:build/kestrel-client.jar:build/examples" RoundTrip "${2:-127.0.0.1:2229}" "${3:-5}"
    ;;
  "") echo "built build/kestrel-client.jar" ;;
  *) echo "usage: $0 [test | example HOST:PORT SECONDS]" >&2; exit 2 ;;
esac
