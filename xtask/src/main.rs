//! `cargo xtask`: the single entry point for building, running, testing and benchmarking.

mod app;
mod bench;
mod build_function;
mod compress;
mod density;
mod deploy;
mod faas_guests;
mod fuzz;
mod guests;
mod image;
mod image_dir;
mod kernel;
mod lint;
mod loader;
mod native;
mod new_function;
mod orchestrators;
mod qemu;
mod run;
mod selftest_net;
mod supervise;
mod tap;
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
    /// Run the whole suite: fmt and clippy, native tests, fuzzing, end-to-end tests in QEMU.
    Test(test::TestArgs),
    /// Measure boot time, image size, request rates and latencies; prints tables.
    Bench(bench::BenchArgs),
    /// Deploy a .wasm or .wat file, or build and deploy a function crate's directory, to a
    /// running server through its admin API.
    Deploy(deploy::DeployArgs),
    /// Fuzz the HTTP parser, canonical-ABI lifting, WASI calls and the RESP reader (libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    /// Create a function crate (http: routes and handlers; wasi: stdin -> stdout) in DIR.
    New(new_function::NewArgs),
    /// Build a function crate (as `new` writes it) in release and shrink it with wasm-opt.
    BuildFunction(build_function::BuildFunctionArgs),
    /// Build the wasm guests into target/guests/*.wasm.
    Guests,
    /// Build our loader: target/image/hermit-loader (multiboot) and hermit-loader-pvh (PVH).
    Loader,
    /// Boot an application ELF in QEMU with our loader (foreground; serial on stdio).
    Boot(qemu::BootArgs),
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
    /// Build the classic FaaS guests (fib.wasm, WAT examples) into target/guests/.
    FaasGuests,
    /// Build the microvm/static-IP variant (kernel without pci and dhcpv4) into target/image-microvm/.
    MicrovmApp,
    /// Write a self-contained image directory (loader, app ELFs, vm.json, BOOTING.md).
    Image(image_dir::ImageArgs),
    /// Boot the image on a tap device inside a fresh network namespace (root; cleaned up on exit).
    Tap(tap::TapArgs),
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
        Cmd::New(args) => {
            let dir = new_function::run(&args)?;
            println!("{}", dir.display());
        }
        Cmd::BuildFunction(args) => {
            let wasm = build_function::build(&args.dir, args.target_dir.as_deref())?;
            println!("{}", wasm.display());
        }
        Cmd::Guests => {
            for path in guests::build_guests()? {
                println!("{}", path.display());
            }
        }
        Cmd::Loader => println!("{}", loader::build_loader()?.display()),
        Cmd::Boot(args) => qemu::boot(&args)?,
        Cmd::Kernel => println!("{}", kernel::build_kernel()?.display()),
        Cmd::App { debug } => println!("{}", app::build_app(!debug)?.display()),
        Cmd::KernelSelftest => app::kernel_selftest()?,
        Cmd::FaasGuests => {
            for path in faas_guests::build_faas_guests()? {
                println!("{}", path.display());
            }
        }
        Cmd::MicrovmApp => println!("{}", image_dir::microvm_image(true)?.app.display()),
        Cmd::Image(args) => println!("{}", image_dir::write(&args)?.display()),
        Cmd::Tap(args) => tap::run(&args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every subcommand's options are well formed (clap checks names, ids and defaults only when
    /// a command is built: a clash between a flattened and an own option failed at run time).
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
