//! The instance footprint charged by `sandbox::instantiate` covers what wasmi really allocates
//! on the host for an instance: measured with a counting allocator, for modules made of many
//! functions, imports, globals, exports, element items and data segments.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::time::Duration;

use sandbox::{Fault, Guest, Limits, Module, Spend};
use wasmi::Linker;

/// Counts the bytes allocated by the current thread (other test threads do not disturb it).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: allocations during thread teardown are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new block exist at once while the contents move.
        track(new_size as isize);
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        track(-(layout.size() as isize));
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at once at most while `f` ran, beyond what was live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let result = f();
    let peak = PEAK.with(Cell::get);
    (result, usize::try_from(peak - before).unwrap_or(0))
}

fn limits(max_memory: usize) -> Limits {
    Limits {
        fuel: 1_000_000,
        timeout: Duration::from_secs(60),
        max_memory,
    }
}

/// Instantiates `module` in a fresh store; returns the outcome, the host bytes allocated at
/// once at most for the store and the instance, and the bytes the run was charged.
fn instantiate(module: &Module, max_memory: usize) -> (Result<(), Fault>, usize, usize) {
    let engine = module.engine();
    let mut linker = Linker::<Guest<()>>::new(engine);
    linker.func_wrap("host", "f", || {}).expect("define host.f");
    let ((outcome, charged), allocated) = peak_during(|| {
        let mut store = sandbox::store(engine, limits(max_memory), ());
        let outcome = sandbox::instantiate(&mut store, &linker, module).map(|_| ());
        let charged = sandbox::report(&store).peak_memory;
        (outcome, charged)
    });
    (outcome, allocated, charged)
}

/// A module of `head`, `n` repetitions of `item` and `tail`, compiled on its own engine.
fn module(head: &str, item: impl Fn(usize) -> String, n: usize, tail: &str) -> Module {
    let mut wat = format!("(module {head}\n");
    for i in 0..n {
        let _ = writeln!(wat, "{}", item(i));
    }
    wat.push_str(tail);
    wat.push(')');
    sandbox::compile(wat.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

/// A function body of 40 one-byte instructions: wasmi refuses modules averaging fewer.
const BODY: &str = "nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop \
                    nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop nop";

#[test]
fn the_charge_covers_what_wasmi_allocates_per_instance() {
    let shapes = [
        ("nothing", module("", |_| String::new(), 0, "")),
        (
            "tables",
            module("(memory 0)", |_| "(table 0 funcref)".to_string(), 4, ""),
        ),
        (
            "defined functions",
            module("", |_| format!("(func {BODY})"), 9_000, ""),
        ),
        (
            "imported functions",
            module(
                "",
                |_| r#"(import "host" "f" (func))"#.to_string(),
                1_000,
                "",
            ),
        ),
        (
            "globals",
            module(
                "",
                |_| "(global (mut i32) (i32.const 1))".to_string(),
                1_000,
                "",
            ),
        ),
        (
            "exports",
            module(
                &format!("(func $f {BODY})"),
                |i| format!(r#"(export "an-export-named-{i}" (func $f))"#),
                10_000,
                "",
            ),
        ),
        (
            "element items",
            module(
                &format!("(func $f {BODY}) (elem func"),
                |_| "$f".to_string(),
                100_000,
                ")",
            ),
        ),
        (
            "element segments",
            module(
                &format!("(func $f {BODY})"),
                |_| "(elem func $f)".to_string(),
                1_000,
                "",
            ),
        ),
        (
            "data segments",
            module("(memory 0)", |_| r#"(data "x")"#.to_string(), 1_000, ""),
        ),
    ];
    let mut problems = Vec::new();
    for (what, module) in &shapes {
        let (outcome, allocated, charged) = instantiate(module, 64 << 20);
        outcome.unwrap_or_else(|e| panic!("{what}: {e}"));
        println!(
            "{what:<20} allocated {allocated:>9} charged {charged:>9} ({:?})",
            module.footprint()
        );
        if charged < allocated {
            problems.push(format!(
                "{what}: {allocated} bytes allocated, {charged} charged"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_instance_beyond_max_memory_fails_with_a_memory_fault_before_allocating() {
    let many = module(
        "",
        |_| "(global (mut i64) (i64.const 1))".to_string(),
        1_000,
        "",
    );
    let needed = many.footprint().host_bytes();
    let (outcome, allocated, charged) = instantiate(&many, 16 << 10);
    match outcome {
        Err(Fault::Memory {
            spent: Spend::Instance,
            needed: n,
            limit,
            ..
        }) => assert_eq!((n, limit), (needed, 16 << 10)),
        other => panic!("{other:?}"),
    }
    assert_eq!(charged, 0, "nothing was charged: the instance did not fit");
    assert!(
        allocated < needed / 2,
        "refused before wasmi allocated the instance: {allocated} bytes"
    );
}
