#!/bin/sh
# Logs in with Auth.Token and calls Helloworld.Call through the HTTP gateway, with curl and jq
# (docs/clients.md, "curl"); tests/clients.rs runs this file as it is.
# Usage: sh call.sh [API]    (default http://localhost:8080)
set -eu
api=${1:-http://localhost:8080}
token=$(curl -sSf "$api/auth/Auth/Token" -H 'Content-Type: application/json' \
    -d '{"id": "admin", "secret": "micro"}' | jq -r .token.access_token)
curl -sSf "$api/helloworld/Helloworld/Call" -H "Authorization: Bearer $token" \
    -H 'Micro-Namespace: micro' -H 'Content-Type: application/json' -d '{"name": "Jane"}'
