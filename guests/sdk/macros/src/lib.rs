//! Macros of `uniwasm_sdk::slight`, the Spiderlightning compatibility layer: the attributes
//! `#[on_server_init]` and `#[register_handler]`, and stand-ins for `wit_bindgen_rust`'s
//! `import!`/`export!` that map Spiderlightning's WIT files to the SDK's modules. Written on
//! `proc_macro` alone: each macro only needs a function's name or one string literal.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// The name of the function `item` declares: the identifier after its top-level `fn`.
fn function_name(item: &TokenStream) -> Option<String> {
    let mut tokens = item.clone().into_iter();
    while let Some(token) = tokens.next() {
        if let TokenTree::Ident(ident) = &token
            && ident.to_string() == "fn"
        {
            return match tokens.next() {
                Some(TokenTree::Ident(name)) => Some(name.to_string()),
                _ => None,
            };
        }
    }
    None
}

fn compile_error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .unwrap_or_default()
}

/// `item` followed by `code` generated for the function it declares.
fn with_function(item: TokenStream, code: impl FnOnce(&str) -> String) -> TokenStream {
    let Some(name) = function_name(&item) else {
        return compile_error("this attribute goes on a function");
    };
    let mut out = item;
    match code(&name).parse::<TokenStream>() {
        Ok(generated) => out.extend(generated),
        Err(error) => out.extend(compile_error(&error.to_string())),
    }
    out
}

/// Makes `fn name(req: Request) -> Result<Response, HttpError>` a handler that routes can name
/// (`"name"`, or with `-` for `_`). It registers the function in the SDK's handler table when
/// the module starts (a static constructor, run by the first export call).
#[proc_macro_attribute]
pub fn register_handler(_attr: TokenStream, item: TokenStream) -> TokenStream {
    with_function(item, |name| {
        format!(
            "const _: () = {{
                extern \"C\" fn register() {{
                    ::uniwasm_sdk::slight::register_handler_fn({name:?}, {name});
                }}
                #[used]
                #[unsafe(link_section = \".init_array\")]
                static REGISTER: extern \"C\" fn() = register;
            }};"
        )
    })
}

/// Makes `fn init() -> Result<()>` (any error that displays) the function's `on-server-init`
/// and exports `handle-http`, which runs the `#[register_handler]` function a route names.
#[proc_macro_attribute]
pub fn on_server_init(_attr: TokenStream, item: TokenStream) -> TokenStream {
    with_function(item, |name| {
        format!(
            "struct __SlightServerInit;
            impl ::uniwasm_sdk::bindings::Guest for __SlightServerInit {{
                fn on_server_init() -> ::core::result::Result<(), ::uniwasm_sdk::HttpError> {{
                    ::uniwasm_sdk::install_panic_hook();
                    {name}().map_err(|e| ::uniwasm_sdk::HttpError::UnexpectedError(
                        ::std::string::ToString::to_string(&e),
                    ))
                }}
                fn handle_http(
                    handler: ::std::string::String,
                    req: ::uniwasm_sdk::Request,
                ) -> ::core::result::Result<::uniwasm_sdk::Response, ::uniwasm_sdk::HttpError> {{
                    ::uniwasm_sdk::install_panic_hook();
                    ::uniwasm_sdk::slight::dispatch(&handler, req)
                }}
            }}
            ::uniwasm_sdk::bindings::export!(__SlightServerInit with_types_in ::uniwasm_sdk::bindings);"
        )
    })
}

/// The file stem of the one string literal in `input` (`"../../wit/http-server.wit"` →
/// `http-server`).
fn wit_stem(input: TokenStream) -> Result<String, TokenStream> {
    let mut tokens = input.into_iter();
    let literal = match (tokens.next(), tokens.next()) {
        (Some(TokenTree::Literal(literal)), None) => literal.to_string(),
        // A literal passed through another macro arrives wrapped in an invisible group.
        (Some(TokenTree::Group(group)), None) if group.delimiter() == Delimiter::None => {
            return wit_stem(group.stream());
        }
        _ => {
            return Err(compile_error(
                "expected one string literal: the path of a .wit file",
            ));
        }
    };
    let path = literal
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .ok_or_else(|| compile_error("expected a string literal"))?;
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    Ok(file.strip_suffix(".wit").unwrap_or(file).to_string())
}

/// Stands in for `wit_bindgen_rust::import!("…/name.wit")`: declares module `name` with the
/// SDK's bindings of that Spiderlightning interface (`http-server`, `keyvalue`).
#[proc_macro]
pub fn import(input: TokenStream) -> TokenStream {
    let stem = match wit_stem(input) {
        Ok(stem) => stem,
        Err(error) => return error,
    };
    match stem.as_str() {
        "http-server" | "keyvalue" => {
            let module = stem.replace('-', "_");
            format!(
                "#[allow(unused_imports)]
                mod {module} {{
                    pub use ::uniwasm_sdk::slight::{module}::*;
                }}"
            )
            .parse()
            .unwrap_or_default()
        }
        other => compile_error(&format!(
            "uniwasm offers the Spiderlightning interfaces http-server and keyvalue, not {other}"
        )),
    }
}

/// Stands in for `wit_bindgen_rust::export!("…/http-server-export.wit")`: nothing to declare,
/// `#[on_server_init]` exports what the host calls.
#[proc_macro]
pub fn export(input: TokenStream) -> TokenStream {
    match wit_stem(input) {
        Ok(stem) if stem == "http-server-export" => TokenStream::new(),
        Ok(other) => compile_error(&format!(
            "uniwasm guests export http-server-export (with #[on_server_init]), not {other}"
        )),
        Err(error) => error,
    }
}
