//! The canonical ABI impls (`abi::WitType`) of generated records, variants and enums.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::quote;

/// `(<T as abi::WitType>::SIZE, <T as abi::WitType>::ALIGN)` for each of `tys`.
fn layouts(tys: &[TokenStream]) -> TokenStream {
    quote!(#( (<#tys as abi::WitType>::SIZE, <#tys as abi::WitType>::ALIGN) ),*)
}

/// `WitType` for a record: fields laid out in order.
pub fn record_impl(name: &Ident, fields: &[Ident], tys: &[TokenStream]) -> TokenStream {
    let layout = layouts(tys);
    quote! {
        impl abi::WitType for #name {
            const SIZE: u32 = abi::record_layout(&[#layout]).0;
            const ALIGN: u32 = abi::record_layout(&[#layout]).1;
            fn flat_types(out: &mut Vec<abi::FlatType>) {
                #( <#tys as abi::WitType>::flat_types(out); )*
            }
            fn load(mem: &dyn abi::GuestMemory, ptr: u32) -> Result<Self, abi::AbiError> {
                let mut offset = 0u32;
                #(
                    offset = abi::align_to(offset, <#tys as abi::WitType>::ALIGN);
                    let #fields = <#tys as abi::WitType>::load(mem, ptr.wrapping_add(offset))?;
                    offset += <#tys as abi::WitType>::SIZE;
                )*
                let _ = offset;
                Ok(Self { #(#fields),* })
            }
            fn store(&self, mem: &mut dyn abi::GuestMemory, ptr: u32) -> Result<(), abi::AbiError> {
                let mut offset = 0u32;
                #(
                    offset = abi::align_to(offset, <#tys as abi::WitType>::ALIGN);
                    self.#fields.store(mem, ptr.wrapping_add(offset))?;
                    offset += <#tys as abi::WitType>::SIZE;
                )*
                let _ = offset;
                Ok(())
            }
            fn lift_flat(
                mem: &dyn abi::GuestMemory,
                vals: &mut abi::FlatIter<'_>,
            ) -> Result<Self, abi::AbiError> {
                Ok(Self { #( #fields: <#tys as abi::WitType>::lift_flat(mem, vals)?, )* })
            }
            fn lower_flat(
                &self,
                mem: &mut dyn abi::GuestMemory,
                out: &mut Vec<abi::FlatVal>,
            ) -> Result<(), abi::AbiError> {
                #( self.#fields.lower_flat(mem, out)?; )*
                Ok(())
            }
        }
    }
}

/// A variant or enum (`is_enum`: no payloads, `Copy`) and its `WitType`.
pub fn variant(
    name: &Ident,
    wit_name: &str,
    cases: &[(Ident, Option<TokenStream>)],
    is_enum: bool,
) -> TokenStream {
    let derive = if is_enum {
        quote!(Debug, Clone, Copy, PartialEq, Eq)
    } else {
        quote!(Debug, Clone, PartialEq)
    };
    let count = Literal::usize_unsuffixed(cases.len());
    let declarations = cases.iter().map(|(case, ty)| match ty {
        Some(ty) => quote!(#case(#ty)),
        None => quote!(#case),
    });
    let payloads: Vec<TokenStream> = cases
        .iter()
        .map(|(_, ty)| ty.clone().unwrap_or_else(|| quote!(())))
        .collect();
    let layout = layouts(&payloads);
    let flats = cases.iter().map(|(_, ty)| match ty {
        Some(ty) => quote!(<#ty as abi::WitType>::flat_types),
        None => quote!(abi::no_payload),
    });
    let mut loads = Vec::new();
    let mut stores = Vec::new();
    let mut lifts = Vec::new();
    let mut lowers = Vec::new();
    for (i, (case, ty)) in cases.iter().enumerate() {
        let i = Literal::usize_unsuffixed(i);
        match ty {
            Some(ty) => {
                loads.push(quote!(#i => Ok(Self::#case(<#ty as abi::WitType>::load(mem, at)?)),));
                stores.push(quote! {
                    Self::#case(v) => {
                        abi::store_discriminant(mem, ptr, #count, #i)?;
                        v.store(mem, at)
                    }
                });
                lifts.push(quote!(#i => Ok(Self::#case(abi::lift_case::<#ty>(mem, &payload)?)),));
                lowers.push(quote! {
                    Self::#case(v) => abi::lower_variant_case(mem, out, &Self::__CASES, #i, v),
                });
            }
            None => {
                loads.push(quote!(#i => Ok(Self::#case),));
                stores.push(quote!(Self::#case => abi::store_discriminant(mem, ptr, #count, #i),));
                lifts.push(quote!(#i => Ok(Self::#case),));
                lowers.push(quote! {
                    Self::#case => abi::lower_variant_case(mem, out, &Self::__CASES, #i, &()),
                });
            }
        }
    }
    let invalid = quote! {
        value => Err(abi::AbiError::InvalidDiscriminant { type_name: #wit_name, value }),
    };
    quote! {
        #[derive(#derive)]
        pub enum #name { #(#declarations,)* }

        impl #name {
            const __CASES: [abi::CaseFlat; #count] = [#(#flats),*];
            const __LAYOUT: (u32, u32, u32) = abi::variant_layout(&[#layout]);
        }

        impl abi::WitType for #name {
            const SIZE: u32 = Self::__LAYOUT.0;
            const ALIGN: u32 = Self::__LAYOUT.1;
            fn flat_types(out: &mut Vec<abi::FlatType>) {
                abi::variant_flat_types(out, &Self::__CASES);
            }
            fn load(mem: &dyn abi::GuestMemory, ptr: u32) -> Result<Self, abi::AbiError> {
                let at = ptr.wrapping_add(Self::__LAYOUT.2);
                let _ = at;
                match abi::load_discriminant(mem, ptr, #count, #wit_name)? {
                    #(#loads)*
                    #invalid
                }
            }
            fn store(&self, mem: &mut dyn abi::GuestMemory, ptr: u32) -> Result<(), abi::AbiError> {
                let at = ptr.wrapping_add(Self::__LAYOUT.2);
                let _ = at;
                match self { #(#stores)* }
            }
            fn lift_flat(
                mem: &dyn abi::GuestMemory,
                vals: &mut abi::FlatIter<'_>,
            ) -> Result<Self, abi::AbiError> {
                let (disc, payload) = abi::lift_variant_flat(vals, &Self::__CASES, #wit_name)?;
                let _ = (mem, &payload);
                match disc {
                    #(#lifts)*
                    #invalid
                }
            }
            fn lower_flat(
                &self,
                mem: &mut dyn abi::GuestMemory,
                out: &mut Vec<abi::FlatVal>,
            ) -> Result<(), abi::AbiError> {
                match self { #(#lowers)* }
            }
        }
    }
}
