// Calls the helloworld example through the gateway (:8080) from Node, with a client generated
// by protoc-gen-es from `micro proto helloworld` (docs/clients.md, "Node / TypeScript
// (Connect)"). tests/connect.rs runs this file.
//
//   MICRO_URL     the gateway, e.g. http://localhost:8080
//   MICRO_TOKEN   an access token (`micro user token`); without it the calls go anonymous
//   HELLOWORLD_PB the generated helloworld_pb.js (default ./gen/helloworld_pb.js)
//
// Prints one line per call: `<what>: <answer>`, or `<what>: error <Code>` when refused.
const { Code, ConnectError, createClient } = require("@connectrpc/connect");
const { createConnectTransport, createGrpcWebTransport } = require("@connectrpc/connect-node");
const { Helloworld } = require(process.env.HELLOWORLD_PB ?? "./gen/helloworld_pb.js");

const baseUrl = process.env.MICRO_URL ?? "http://localhost:8080";
const token = process.env.MICRO_TOKEN;

// Sends the token as the gateway reads it: `Authorization: Bearer <token>`.
const bearer = (next) => async (req) => {
  if (token) req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};

async function report(what, call) {
  try {
    console.log(`${what}: ${await call()}`);
  } catch (err) {
    const error = ConnectError.from(err);
    console.log(`${what}: error ${Code[error.code]} ${error.rawMessage}`);
  }
}

async function main() {
  const options = { baseUrl, httpVersion: "1.1", interceptors: [bearer] };
  const json = createClient(Helloworld, createConnectTransport({ ...options, useBinaryFormat: false }));
  const binary = createClient(Helloworld, createConnectTransport({ ...options, useBinaryFormat: true }));
  const grpcWeb = createClient(Helloworld, createGrpcWebTransport(options));

  await report("connect json call", async () => (await json.call({ name: "Jane" })).msg);
  await report("connect binary call", async () => (await binary.call({ name: "John" })).msg);
  await report("grpc-web call", async () => (await grpcWeb.call({ name: "Jim" })).msg);
  await report("connect stream", async () => {
    const counts = [];
    for await (const answer of json.stream({ count: 3n })) counts.push(answer.count);
    return counts.join(",");
  });
  await report("grpc-web stream", async () => {
    const counts = [];
    for await (const answer of grpcWeb.stream({ count: 2n })) counts.push(answer.count);
    return counts.join(",");
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
