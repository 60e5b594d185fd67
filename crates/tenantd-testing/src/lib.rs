//! `#[backends]`: writes a tenantd integration test once and runs it on
//! every storage backend.
//!
//! ```ignore
//! #[backends]                              // or #[backends(flavor = "multi_thread")]
//! async fn records_survive_a_restart() { /* … */ }
//! ```
//!
//! expands to the function itself plus a module of the same name holding
//! one `#[tokio::test]` per backend (`records_survive_a_restart::sqlite`,
//! `records_survive_a_restart::postgres`). Each wrapper runs the body
//! through `crate::support::run_on`, which sets the backend in a tokio
//! task-local that `TestApp` and the config helpers read, so a test never
//! names its backend. The attribute's arguments go to `tokio::test`
//! unchanged. A function and a module may share a name (different
//! namespaces), so the body keeps its name and its place.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, parse_macro_input};

/// Runs an `async fn` test once per backend; see the crate docs.
#[proc_macro_attribute]
pub fn backends(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let function = parse_macro_input!(item as ItemFn);
    if function.sig.asyncness.is_none() {
        return syn::Error::new_spanned(&function.sig, "#[backends] needs an async fn")
            .to_compile_error()
            .into();
    }
    let name = &function.sig.ident;
    let tokio_args = if args.is_empty() {
        quote!()
    } else {
        quote!((#args))
    };
    // `#[ignore]` and the like belong on the generated tests.
    let passed: Vec<_> = function
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("ignore") || a.path().is_ident("should_panic"))
        .collect();
    let mut body = function.clone();
    body.attrs
        .retain(|a| !a.path().is_ident("ignore") && !a.path().is_ident("should_panic"));
    quote! {
        #body

        mod #name {
            #[tokio::test #tokio_args]
            #(#passed)*
            async fn sqlite() {
                crate::support::run_on(crate::support::Backend::Sqlite, super::#name()).await;
            }

            #[tokio::test #tokio_args]
            #(#passed)*
            async fn postgres() {
                crate::support::run_on(crate::support::Backend::Postgres, super::#name()).await;
            }
        }
    }
    .into()
}
