//! `cargo xtask`: the single entry point for building, running, testing and benchmarking.

// --- loader helper: modules ---
mod loader;
mod qemu;
// --- end loader helper ---
// --- kernel-build helper: modules ---
mod app;
mod kernel;
mod selftest_net;
// --- end kernel-build helper ---
// --- faas helper: modules ---
mod faas_guests;
// --- end faas helper ---
// --- guests helper (wasm-functions) ---
mod guests;
// --- end guests helper ---
mod bench;
mod deploy;
mod fuzz;
// --- deployment-forms helper: modules ---
mod density;
mod image_dir;
mod tap;
// --- end deployment-forms helper ---
mod image;
mod lint;
mod native;
mod run;
mod supervise;
mod test;
mod test_tally;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark the wasm unikernel")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the repository root.
    Root,
    /// Build everything: kernel, application, loader (the image), guests and the native server.
    Build,
    /// Build what is needed and serve HTTP on 127.0.0.1:PORT (image in QEMU, or --native).
    Run(run::RunArgs),
    /// Run the whole test suite (native tests, then end-to-end tests in QEMU).
    Test(test::TestArgs),
    /// Measure boot time, image size, request rates and latencies; prints tables.
    Bench(bench::BenchArgs),
    /// Deploy a .wasm or .wat file to a running server through its admin API.
    Deploy(deploy::DeployArgs),
    /// Fuzz the HTTP parser, canonical-ABI lifting, WASI calls and the RESP reader (libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    // --- helper blocks (kernel, app, loader, boot, guests) go below this line ---
    // --- guests helper (wasm-functions) ---
    /// Build the wasm guests into target/guests/*.wasm.
    Guests,
    // --- end guests helper ---
    // --- loader helper: commands ---
    /// Build our multiboot loader into target/image/hermit-loader.
    Loader,
    /// Boot an application ELF in QEMU with our loader (foreground; serial on stdio).
    Boot(qemu::BootArgs),
    // --- end loader helper ---
    // --- kernel-build helper: commands ---
    /// Build the hermit kernel archive (target/hermit-kernel/dist/libhermit.a).
    Kernel,
    /// Build kernel-app for hermit and link it into target/image/kernel-app.
    App {
        /// Build the debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Boot kernel/selftest in QEMU: libm builtins, entropy, threads, clocks, TCP connections under load.
    KernelSelftest,
    // --- end kernel-build helper ---
    // --- faas helper: commands ---
    /// Build the classic FaaS guests (fib.wasm, WAT examples) into target/guests/.
    FaasGuests,
    // --- end faas helper ---
    // --- deployment-forms helper: commands ---
    /// Build the microvm/static-IP variant (kernel without pci and dhcpv4) into target/image-microvm/.
    MicrovmApp,
    /// Write a self-contained image directory (loader, app ELFs, vm.json, BOOTING.md).
    Image(image_dir::ImageArgs),
    /// Boot the image on a tap device inside a fresh network namespace (root; cleaned up on exit).
    Tap(tap::TapArgs),
    // --- end deployment-forms helper ---
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Root => println!("{}", util::root().display()),
        Cmd::Build => {
            native::build_server()?;
            let image = image::build()?;
            println!("{}\n{}", image.loader.display(), image.app.display());
        }
        Cmd::Run(args) => run::run(&args)?,
        Cmd::Test(args) => test::run(&args)?,
        Cmd::Bench(args) => bench::run(&args)?,
        Cmd::Deploy(args) => deploy::run(&args)?,
        Cmd::Fuzz(args) => {
            fuzz::run(&args)?;
        }
        // --- helper dispatch goes below this line ---
        // --- guests helper (wasm-functions) ---
        Cmd::Guests => {
            for path in guests::build_guests()? {
                println!("{}", path.display());
            }
        }
        // --- end guests helper ---
        // --- loader helper: dispatch ---
        Cmd::Loader => println!("{}", loader::build_loader()?.display()),
        Cmd::Boot(args) => qemu::boot(&args)?,
        // --- end loader helper ---
        // --- kernel-build helper: dispatch ---
        Cmd::Kernel => println!("{}", kernel::build_kernel()?.display()),
        Cmd::App { debug } => println!("{}", app::build_app(!debug)?.display()),
        Cmd::KernelSelftest => app::kernel_selftest()?,
        // --- end kernel-build helper ---
        // --- faas helper: dispatch ---
        Cmd::FaasGuests => {
            for path in faas_guests::build_faas_guests()? {
                println!("{}", path.display());
            }
        }
        // --- end faas helper ---
        // --- deployment-forms helper: dispatch ---
        Cmd::MicrovmApp => println!("{}", image_dir::microvm_image(true)?.app.display()),
        Cmd::Image(args) => println!("{}", image_dir::write(&args)?.display()),
        Cmd::Tap(args) => tap::run(&args)?,
        // --- end deployment-forms helper ---
    }
    Ok(())
}
