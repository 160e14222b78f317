"""Logs in with auth.Auth/Token and calls helloworld.Helloworld/Call through :8081.

The client is generated with grpcio-tools from `micro proto` output (docs/clients.md,
"Python (grpcio)"); tests/clients.rs runs this file as it is.

Usage: python call.py [ADDRESS] [--anonymous]
"""

import sys

import grpc

from auth import auth_pb2, auth_pb2_grpc  # micro proto auth
import helloworld_pb2, helloworld_pb2_grpc  # micro proto helloworld

args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
address = args[0] if args else "localhost:8081"
# The namespace every call acts in; the token must have been issued there (or in micro).
metadata = [("micro-namespace", "micro")]

with grpc.insecure_channel(address) as channel:
    if "--anonymous" not in sys.argv:
        login = auth_pb2_grpc.AuthStub(channel).Token(
            auth_pb2.TokenRequest(id="admin", secret="micro"), metadata=metadata
        )
        metadata.append(("authorization", f"Bearer {login.token.access_token}"))
    hello = helloworld_pb2_grpc.HelloworldStub(channel)
    try:
        reply = hello.Call(helloworld_pb2.Request(name="Jane"), metadata=metadata)
    except grpc.RpcError as err:
        sys.exit(f"{err.code().name}: {err.details()}")
    print(reply.msg)
