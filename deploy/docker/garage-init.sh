#!/bin/sh
# One-shot setup of the compose Garage node, the same steps as ensure_garage in deploy/lib.sh: a
# layout for the single node, the moetune key, the moetune bucket. Safe to run again.
set -e
g="/garage -c /etc/garage.toml"
if $g layout show 2>/dev/null | grep -q "No nodes currently have a role"; then
  $g layout assign -z dc1 -c 10G "$($g node id -q | cut -d@ -f1)"
  $g layout apply --version 1
fi
for _ in $(seq 1 50); do $g key info "$S3_KEY_ID" >/dev/null 2>&1 && break
  $g key import --yes -n moetune "$S3_KEY_ID" "$S3_SECRET" >/dev/null 2>&1 && break; sleep 0.5; done
$g bucket info moetune >/dev/null 2>&1 || $g bucket create moetune
$g bucket allow --read --write --owner moetune --key "$S3_KEY_ID"
