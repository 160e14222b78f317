// Logs in with auth.Auth/Token and calls helloworld.Helloworld/Call through :8081.
//
// The client is generated with protoc-gen-go and protoc-gen-go-grpc from `micro proto` output
// (docs/clients.md, "Go (grpc-go)"); tests/clients.rs runs this file as it is.
//
// Usage: go run main.go [ADDRESS] [--anonymous]
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"micro.dev/proto/auth"       // micro proto auth: its go_package
	"micro.dev/proto/helloworld" // micro proto helloworld: the M flag of protoc
)

func main() {
	address, anonymous := "localhost:8081", false
	for _, arg := range os.Args[1:] {
		if arg == "--anonymous" {
			anonymous = true
		} else if !strings.HasPrefix(arg, "--") {
			address = arg
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The namespace every call acts in; the token must have been issued there (or in micro).
	ctx = metadata.AppendToOutgoingContext(ctx, "micro-namespace", "micro")

	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	if !anonymous {
		login, err := auth.NewAuthClient(conn).Token(ctx, &auth.TokenRequest{Id: "admin", Secret: "micro"})
		if err != nil {
			fail(err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.Token.AccessToken)
	}
	reply, err := helloworld.NewHelloworldClient(conn).Call(ctx, &helloworld.Request{Name: "Jane"})
	if err != nil {
		fail(err)
	}
	fmt.Println(reply.Msg)
}

// fail prints the call's gRPC status as CODE: details and exits non-zero.
func fail(err error) {
	s := status.Convert(err)
	fmt.Fprintf(os.Stderr, "%s: %s\n", strings.ToUpper(s.Code().String()), s.Message())
	os.Exit(1)
}
