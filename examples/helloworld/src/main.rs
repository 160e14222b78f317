mod handler;
micro::include_proto!("helloworld");

#[tokio::main]
async fn main() -> micro::Result<()> {
    micro::Service::new("helloworld")
        .handle(helloworld_server::HelloworldServer::new(
            handler::Helloworld,
        ))
        .run()
        .await
}
