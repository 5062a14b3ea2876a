//! Nanoprocesses: modules whose `_start` maps numbers to numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmi::{F32, F64, Linker, Module, Store, Val, ValType};

use crate::error::RunError;
use crate::exec::{self, Budget, Fuel, HasBudget};
use crate::kind::{ENTRY, Kind, PLATFORM_MODULE, PLATFORM_NOW, classify, type_list};
use crate::limits::Limits;

/// What a finished nanoprocess invocation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct NanoOutput {
    /// The results of `_start`, rendered as text (`7`, `-1`, `2.5`, `NaN`).
    pub results: Vec<String>,
    /// Fuel consumed, instantiation included.
    pub fuel_used: u64,
    /// Largest linear memory size reached, in bytes.
    pub peak_memory: usize,
    /// Wall-clock time of the invocation, instantiation included.
    pub elapsed: Duration,
}

struct NanoState {
    budget: Budget,
}

impl HasBudget for NanoState {
    fn budget(&self) -> &Budget {
        &self.budget
    }
    fn budget_mut(&mut self) -> &mut Budget {
        &mut self.budget
    }
}

/// Milliseconds since the Unix epoch, the value of `platform.now`.
fn now_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// Parses comma-separated arguments (`"5,2"`, `" 1.5 , -3 "`, `""` for none) into values of `params`.
///
/// Integers accept the signed and the unsigned range (`4294967295` is `-1i32`) and a `0x` prefix;
/// floats accept anything Rust's `f32`/`f64` parsers accept (`inf`, `NaN`, `1e3`).
pub fn parse_args(text: &str, params: &[ValType]) -> Result<Vec<Val>, RunError> {
    let text = text.trim();
    let pieces: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::trim).collect()
    };
    if pieces.len() != params.len() {
        return Err(RunError::BadArgs(format!(
            "expected {} argument(s) ({}), got {}",
            params.len(),
            type_list(params),
            pieces.len()
        )));
    }
    pieces
        .iter()
        .zip(params)
        .enumerate()
        .map(|(index, (piece, ty))| {
            parse_value(piece, *ty).ok_or_else(|| {
                RunError::BadArgs(format!(
                    "argument {} {piece:?} is not a valid {}",
                    index + 1,
                    type_list(&[*ty])
                ))
            })
        })
        .collect()
}

fn parse_value(text: &str, ty: ValType) -> Option<Val> {
    match ty {
        ValType::I32 => parse_int(text)
            .and_then(|value| {
                i32::try_from(value)
                    .ok()
                    .or_else(|| u32::try_from(value).ok().map(|v| v as i32))
            })
            .map(Val::I32),
        ValType::I64 => parse_int(text)
            .and_then(|value| {
                i64::try_from(value)
                    .ok()
                    .or_else(|| u64::try_from(value).ok().map(|v| v as i64))
            })
            .map(Val::I64),
        ValType::F32 => text
            .parse::<f32>()
            .ok()
            .map(|value| Val::F32(F32::from_float(value))),
        ValType::F64 => text
            .parse::<f64>()
            .ok()
            .map(|value| Val::F64(F64::from_float(value))),
        _ => None,
    }
}

fn parse_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    if !digits.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Renders a result value as text.
pub fn format_value(value: &Val) -> String {
    match value {
        Val::I32(value) => value.to_string(),
        Val::I64(value) => value.to_string(),
        Val::F32(value) => value.to_float().to_string(),
        Val::F64(value) => value.to_float().to_string(),
        other => format!("{other:?}"),
    }
}

/// Runs the nanoprocess `module` once with already typed `args`, in a fresh store and instance.
pub fn run_nanoprocess(
    module: &Module,
    args: &[Val],
    limits: &Limits,
) -> Result<NanoOutput, RunError> {
    let (params, results) = match classify(module) {
        Kind::Nanoprocess { params, results } => (params, results),
        Kind::WasiCommand => {
            return Err(RunError::Invalid(
                "the module is a WASI command, not a nanoprocess".into(),
            ));
        }
        Kind::Unknown(reason) => {
            return Err(RunError::Invalid(format!("not a nanoprocess: {reason}")));
        }
    };
    let given: Vec<ValType> = args.iter().map(Val::ty).collect();
    if given != params {
        return Err(RunError::BadArgs(format!(
            "`{ENTRY}` takes ({}), got ({})",
            type_list(&params),
            type_list(&given)
        )));
    }

    let mut store = Store::new(
        module.engine(),
        NanoState {
            budget: Budget::new(limits),
        },
    );
    store.limiter(|state| &mut state.budget_mut().limiter);
    let mut linker = Linker::<NanoState>::new(module.engine());
    linker
        .func_wrap(PLATFORM_MODULE, PLATFORM_NOW, now_millis)
        .map_err(|error| RunError::Invalid(error.to_string()))?;

    let mut fuel = Fuel::new(limits);
    let instance = exec::instantiate(&mut store, &mut fuel, limits, |store| {
        linker.instantiate_and_start(store, module)
    })?;
    let entry = instance
        .get_func(&store, ENTRY)
        .ok_or_else(|| RunError::Invalid(format!("no `{ENTRY}` function is exported")))?;
    let mut outputs: Vec<Val> = results.iter().map(|ty| Val::default_for_ty(*ty)).collect();
    exec::call(&mut store, &mut fuel, limits, entry, args, &mut outputs)?;

    let budget = store.data().budget();
    Ok(NanoOutput {
        results: outputs.iter().map(format_value).collect(),
        fuel_used: fuel.used,
        peak_memory: budget.limiter.peak_memory,
        elapsed: budget.started.elapsed(),
    })
}

/// Parses `args` (see [`parse_args`]) against the module's `_start` and runs it.
pub fn run_nanoprocess_str(
    module: &Module,
    args: &str,
    limits: &Limits,
) -> Result<NanoOutput, RunError> {
    let params = match classify(module) {
        Kind::Nanoprocess { params, .. } => params,
        Kind::WasiCommand => {
            return Err(RunError::Invalid(
                "the module is a WASI command, not a nanoprocess".into(),
            ));
        }
        Kind::Unknown(reason) => {
            return Err(RunError::Invalid(format!("not a nanoprocess: {reason}")));
        }
    };
    let args = parse_args(args, &params)?;
    run_nanoprocess(module, &args, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_in_decimal_and_hex_with_one_sign() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("-0x10"), Some(-16));
        assert_eq!(parse_int("+7"), Some(7));
        for bad in ["", "-", "--1", "+-1", "0x", "0x-5", "1.0", " 1"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn values_render_as_plain_numbers() {
        assert_eq!(format_value(&Val::I32(-7)), "-7");
        assert_eq!(format_value(&Val::F64(F64::from_float(42.0))), "42");
        assert_eq!(format_value(&Val::F32(F32::from_float(0.5))), "0.5");
        assert!(parse_args("1e400", &[ValType::F64]).is_ok());
        assert!(parse_args("-2147483649", &[ValType::I32]).is_err());
    }
}
