#!/bin/sh
# Makes a Redis Cluster of the nodes named as arguments (HOST or HOST:PORT,
# port 6379 by default), a replica for each primary: 6 nodes give 3
# primaries and 3 replicas. docker-compose.yml's `cluster` profile runs it
# at every start-up (service redis-cluster-init), and so does the Job of
# deploy/k8s/cluster/30-redis-cluster-create.yaml, which holds a copy in the
# ConfigMap redis-cluster (scripts/validate-deploy checks they are the
# same). Idempotent:
# - every node already reports cluster_state:ok: nothing to do;
# - every node is new (knows only itself, holds no slots): creates the
#   cluster with `redis-cli --cluster create`;
# - otherwise the cluster was made before and its nodes came back at other
#   addresses all at once (new containers after `docker compose down`, all
#   pods replaced), which they do not find by themselves: each node meets
#   the others at their addresses now, and they update theirs.
# Then waits until every node reports cluster_state:ok (exit 0), or gives up
# after 2 minutes (exit 1). With REDISCLI_AUTH set, redis-cli uses it as the
# password.
set -eu
[ "$#" -ge 6 ] || { echo "usage: $0 HOST... (6 nodes or more)" >&2; exit 2; }

# ADDR:PORT -> redis-cli's options (an IPv6 address keeps its colons).
at() { echo "-h ${1%:*} -p ${1##*:}"; }
info() { # ADDR:PORT field
  # shellcheck disable=SC2046 # the options
  redis-cli $(at "$1") cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# CLUSTER MEET takes addresses, not names: look each node up, and wait for
# it to answer.
addrs=""
for node; do
  case $node in
    *:*) host=${node%:*} port=${node##*:} ;;
    *) host=$node port=6379 ;;
  esac
  tries=0
  until addr=$(getent hosts "$host" | awk '{ print $1; exit }') && [ -n "$addr" ] &&
    [ "$(redis-cli -h "$addr" -p "$port" ping 2>/dev/null)" = PONG ]; do
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || { echo "$node: no answer after 2 minutes" >&2; exit 1; }
    sleep 2
  done
  addrs="$addrs $addr:$port"
done
# shellcheck disable=SC2086 # one ADDR:PORT per word
set -- $addrs

ok=yes new=yes
for a; do
  [ "$(info "$a" cluster_state)" = ok ] || ok=no
  [ "$(info "$a" cluster_known_nodes)" = 1 ] && [ "$(info "$a" cluster_slots_assigned)" = 0 ] || new=no
done
if [ "$ok" = yes ]; then
  echo "cluster_state:ok on all $# nodes; nothing to do"
  exit 0
fi
if [ "$new" = yes ]; then
  redis-cli --cluster create "$@" --cluster-replicas 1 --cluster-yes
else
  echo "the cluster was made before and is not ok: meeting the nodes at their addresses now"
  for a; do
    for b; do
      # shellcheck disable=SC2046 # the options
      [ "$a" = "$b" ] || redis-cli $(at "$a") cluster meet "${b%:*}" "${b##*:}" >/dev/null
    done
  done
fi

for a; do
  tries=0
  until [ "$(info "$a" cluster_state)" = ok ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
      echo "$a: cluster_state not ok after 2 minutes:" >&2
      # shellcheck disable=SC2046 # the options
      redis-cli $(at "$a") cluster info >&2 || true
      exit 1
    fi
    sleep 2
  done
done
echo "cluster_state:ok on all $# nodes"
