//! Nanoprocesses: modules whose `_start` maps numbers to numbers.

use std::time::{SystemTime, UNIX_EPOCH};

use sandbox::{Guest, Module};
use wasmi::{F32, F64, Linker, Val, ValType};

use crate::error::RunError;
use crate::kind::{
    ENTRY, Kind, PLATFORM_MODULE, PLATFORM_NOW, classify, nanoprocess_signature, type_list,
};
use crate::{Limits, Run};

/// What a finished nanoprocess invocation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct NanoOutput {
    /// The results of `_start`, rendered as text (`7`, `-1`, `2.5`, `NaN`).
    pub results: Vec<String>,
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

/// The parameter and result types `module` runs with as a nanoprocess (see
/// [`nanoprocess_signature`]).
fn signature(module: &Module) -> Result<(Vec<ValType>, Vec<ValType>), RunError> {
    if let Some(signature) = nanoprocess_signature(module) {
        return Ok((signature.params, signature.results));
    }
    Err(match classify(module) {
        Kind::Unknown(reason) => RunError::Invalid(format!("not a nanoprocess: {reason}")),
        Kind::WasiCommand | Kind::Nanoprocess { .. } => {
            RunError::Invalid("the module is a WASI command, not a nanoprocess".into())
        }
    })
}

/// Runs the nanoprocess `module` once with already typed `args`, in a fresh store and instance.
pub fn run_nanoprocess(module: &Module, args: &[Val], limits: &Limits) -> Run<NanoOutput> {
    let (params, results) = match signature(module) {
        Ok(signature) => signature,
        Err(error) => return Run::failed(error),
    };
    let given: Vec<ValType> = args.iter().map(Val::ty).collect();
    if given != params {
        return Run::failed(RunError::BadArgs(format!(
            "`{ENTRY}` takes ({}), got ({})",
            type_list(&params),
            type_list(&given)
        )));
    }

    let mut store = sandbox::store(module.engine(), limits.sandbox(), ());
    let mut linker = Linker::<Guest<()>>::new(module.engine());
    if let Err(error) = linker.func_wrap(PLATFORM_MODULE, PLATFORM_NOW, now_millis) {
        return Run::failed(RunError::Invalid(error.to_string()));
    }
    let mut outputs: Vec<Val> = results.iter().map(|ty| Val::default_for_ty(*ty)).collect();
    let result = sandbox::instantiate(&mut store, &linker, module)
        .map_err(RunError::from)
        .and_then(|instance| {
            let entry = instance
                .get_func(&store, ENTRY)
                .ok_or_else(|| RunError::Invalid(format!("no `{ENTRY}` function is exported")))?;
            Ok(sandbox::call(&mut store, entry, args, &mut outputs)?)
        })
        .map(|()| NanoOutput {
            results: outputs.iter().map(format_value).collect(),
        });
    Run {
        result,
        report: sandbox::report(&store),
    }
}

/// Parses `args` (see [`parse_args`]) against the module's `_start` and runs it.
pub fn run_nanoprocess_str(module: &Module, args: &str, limits: &Limits) -> Run<NanoOutput> {
    match signature(module).and_then(|(params, _)| parse_args(args, &params)) {
        Ok(args) => run_nanoprocess(module, &args, limits),
        Err(error) => Run::failed(error),
    }
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
