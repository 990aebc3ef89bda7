fn main() {
    println!("cargo:rerun-if-changed=proto/supervisor.proto");
    println!("cargo:rerun-if-changed=proto/admin.proto");
    prost_build::compile_protos(&["proto/supervisor.proto"], &["proto/"])
        .expect("compile proto/supervisor.proto (is protoc installed? scripts/install-deps)");
    // The admin API is a tonic service; only the daemon and CLI build it (feature
    // `admin`), so the pod supervisor links no gRPC.
    if std::env::var_os("CARGO_FEATURE_ADMIN").is_some() {
        tonic_prost_build::configure()
            .compile_protos(&["proto/admin.proto"], &["proto/"])
            .expect("compile proto/admin.proto");
    }
}
