fn main() {
    micro::build::compile("proto/helloworld.proto").unwrap();
}
