//! C math functions for hermit applications.
//!
//! Rust's `std` for `x86_64-unknown-hermit` declares `sin`, `exp`, `lgamma_r`, ... as external C
//! functions and expects the kernel archive (`libhermit.a`) to define them. This crate wraps the
//! `libm` crate with `#[unsafe(no_mangle)] extern "C"` functions. It is built for the hermit target
//! (SSE floating point ABI, unlike the soft-float kernel) and appended to `libhermit.a` by
//! `cargo xtask kernel`, which keeps only the symbols defined here (plus the `mem*` functions)
//! global.

#![no_std]

/// Defines `extern "C"` functions that forward to the `libm` function of the same name.
macro_rules! forward_to_libm {
    ($(fn $name:ident($($arg:ident: $ty:ty),+) -> $ret:ty;)+) => {
        $(
            #[doc = concat!("C `", stringify!($name), "`, computed by `libm::", stringify!($name), "`.")]
            #[unsafe(no_mangle)]
            pub extern "C" fn $name($($arg: $ty),+) -> $ret {
                libm::$name($($arg),+)
            }
        )+
    };
}

forward_to_libm! {
    fn acos(x: f64) -> f64;
    fn acosf(x: f32) -> f32;
    fn acosh(x: f64) -> f64;
    fn acoshf(x: f32) -> f32;
    fn asin(x: f64) -> f64;
    fn asinf(x: f32) -> f32;
    fn asinh(x: f64) -> f64;
    fn asinhf(x: f32) -> f32;
    fn atan(x: f64) -> f64;
    fn atanf(x: f32) -> f32;
    fn atan2(y: f64, x: f64) -> f64;
    fn atan2f(y: f32, x: f32) -> f32;
    fn atanh(x: f64) -> f64;
    fn atanhf(x: f32) -> f32;
    fn cbrt(x: f64) -> f64;
    fn cbrtf(x: f32) -> f32;
    fn ceil(x: f64) -> f64;
    fn ceilf(x: f32) -> f32;
    fn copysign(x: f64, y: f64) -> f64;
    fn copysignf(x: f32, y: f32) -> f32;
    fn cos(x: f64) -> f64;
    fn cosf(x: f32) -> f32;
    fn cosh(x: f64) -> f64;
    fn coshf(x: f32) -> f32;
    fn erf(x: f64) -> f64;
    fn erff(x: f32) -> f32;
    fn erfc(x: f64) -> f64;
    fn erfcf(x: f32) -> f32;
    fn exp(x: f64) -> f64;
    fn expf(x: f32) -> f32;
    fn exp2(x: f64) -> f64;
    fn exp2f(x: f32) -> f32;
    fn exp10(x: f64) -> f64;
    fn exp10f(x: f32) -> f32;
    fn expm1(x: f64) -> f64;
    fn expm1f(x: f32) -> f32;
    fn fabs(x: f64) -> f64;
    fn fabsf(x: f32) -> f32;
    fn fdim(x: f64, y: f64) -> f64;
    fn fdimf(x: f32, y: f32) -> f32;
    fn floor(x: f64) -> f64;
    fn floorf(x: f32) -> f32;
    fn fma(x: f64, y: f64, z: f64) -> f64;
    fn fmaf(x: f32, y: f32, z: f32) -> f32;
    fn fmax(x: f64, y: f64) -> f64;
    fn fmaxf(x: f32, y: f32) -> f32;
    fn fmin(x: f64, y: f64) -> f64;
    fn fminf(x: f32, y: f32) -> f32;
    fn fmod(x: f64, y: f64) -> f64;
    fn fmodf(x: f32, y: f32) -> f32;
    fn hypot(x: f64, y: f64) -> f64;
    fn hypotf(x: f32, y: f32) -> f32;
    fn ilogb(x: f64) -> i32;
    fn ilogbf(x: f32) -> i32;
    fn ldexp(x: f64, n: i32) -> f64;
    fn ldexpf(x: f32, n: i32) -> f32;
    fn lgamma(x: f64) -> f64;
    fn lgammaf(x: f32) -> f32;
    fn log(x: f64) -> f64;
    fn logf(x: f32) -> f32;
    fn log10(x: f64) -> f64;
    fn log10f(x: f32) -> f32;
    fn log1p(x: f64) -> f64;
    fn log1pf(x: f32) -> f32;
    fn log2(x: f64) -> f64;
    fn log2f(x: f32) -> f32;
    fn nextafter(x: f64, y: f64) -> f64;
    fn nextafterf(x: f32, y: f32) -> f32;
    fn pow(x: f64, y: f64) -> f64;
    fn powf(x: f32, y: f32) -> f32;
    fn remainder(x: f64, y: f64) -> f64;
    fn remainderf(x: f32, y: f32) -> f32;
    fn rint(x: f64) -> f64;
    fn rintf(x: f32) -> f32;
    fn round(x: f64) -> f64;
    fn roundf(x: f32) -> f32;
    fn scalbn(x: f64, n: i32) -> f64;
    fn scalbnf(x: f32, n: i32) -> f32;
    fn sin(x: f64) -> f64;
    fn sinf(x: f32) -> f32;
    fn sinh(x: f64) -> f64;
    fn sinhf(x: f32) -> f32;
    fn sqrt(x: f64) -> f64;
    fn sqrtf(x: f32) -> f32;
    fn tan(x: f64) -> f64;
    fn tanf(x: f32) -> f32;
    fn tanh(x: f64) -> f64;
    fn tanhf(x: f32) -> f32;
    fn tgamma(x: f64) -> f64;
    fn tgammaf(x: f32) -> f32;
    fn trunc(x: f64) -> f64;
    fn truncf(x: f32) -> f32;
}

/// C `frexp`: splits `x` into a mantissa in [0.5, 1) and a power of two stored in `*exp`.
///
/// # Safety
/// `exp` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frexp(x: f64, exp: *mut i32) -> f64 {
    let (mantissa, exponent) = libm::frexp(x);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { exp.write(exponent) };
    mantissa
}

/// C `frexpf`, the `f32` version of [`frexp`].
///
/// # Safety
/// `exp` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frexpf(x: f32, exp: *mut i32) -> f32 {
    let (mantissa, exponent) = libm::frexpf(x);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { exp.write(exponent) };
    mantissa
}

/// C `lgamma_r`: the log of |Γ(x)|, with the sign of Γ(x) stored in `*sign`.
///
/// # Safety
/// `sign` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lgamma_r(x: f64, sign: *mut i32) -> f64 {
    let (value, gamma_sign) = libm::lgamma_r(x);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { sign.write(gamma_sign) };
    value
}

/// C `lgammaf_r`, the `f32` version of [`lgamma_r`].
///
/// # Safety
/// `sign` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lgammaf_r(x: f32, sign: *mut i32) -> f32 {
    let (value, gamma_sign) = libm::lgammaf_r(x);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { sign.write(gamma_sign) };
    value
}

/// C `modf`: the fractional part of `x`, with the integral part stored in `*integral`.
///
/// # Safety
/// `integral` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn modf(x: f64, integral: *mut f64) -> f64 {
    let (fraction, whole) = libm::modf(x);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { integral.write(whole) };
    fraction
}

/// C `modff`, the `f32` version of [`modf`].
///
/// # Safety
/// `integral` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn modff(x: f32, integral: *mut f32) -> f32 {
    let (fraction, whole) = libm::modff(x);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { integral.write(whole) };
    fraction
}

/// C `remquo`: the remainder of `x / y`, with low bits of the quotient stored in `*quotient`.
///
/// # Safety
/// `quotient` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn remquo(x: f64, y: f64, quotient: *mut i32) -> f64 {
    let (remainder, quotient_bits) = libm::remquo(x, y);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { quotient.write(quotient_bits) };
    remainder
}

/// C `remquof`, the `f32` version of [`remquo`].
///
/// # Safety
/// `quotient` must be valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn remquof(x: f32, y: f32, quotient: *mut i32) -> f32 {
    let (remainder, quotient_bits) = libm::remquof(x, y);
    // SAFETY: the caller passes a writable pointer, as C requires.
    unsafe { quotient.write(quotient_bits) };
    remainder
}

/// C `sincos`: stores both the sine and the cosine of `x`.
///
/// # Safety
/// `sin` and `cos` must be valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sincos(x: f64, sin: *mut f64, cos: *mut f64) {
    let (sine, cosine) = libm::sincos(x);
    // SAFETY: the caller passes writable pointers, as C requires.
    unsafe {
        sin.write(sine);
        cos.write(cosine);
    }
}

/// C `sincosf`, the `f32` version of [`sincos`].
///
/// # Safety
/// `sin` and `cos` must be valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sincosf(x: f32, sin: *mut f32, cos: *mut f32) {
    let (sine, cosine) = libm::sincosf(x);
    // SAFETY: the caller passes writable pointers, as C requires.
    unsafe {
        sin.write(sine);
        cos.write(cosine);
    }
}

/// A `no_std` staticlib needs a panic handler; the functions above never panic.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
