//! The demo site's built-in knowledge base: the help pages of Fernhill
//! Supply Co., the fictional web shop of the retrieval eval set
//! (`knowledge/eval/shop/`), compiled into the binary so that `make run`
//! answers real questions with no file to fetch.
//!
//! It is ingested the first time the server starts with `[knowledge] demo`
//! on, the `demo` site present and no knowledge base for it yet; after that
//! it is the site's own, changed or emptied through the admin API like any
//! other.

/// The documents, by the name (and URL) they are ingested under.
pub const DOCUMENTS: &[(&str, &[u8])] = &[
    (
        "contact.txt",
        include_bytes!("../../../knowledge/eval/shop/contact.txt"),
    ),
    (
        "gift-cards.txt",
        include_bytes!("../../../knowledge/eval/shop/gift-cards.txt"),
    ),
    (
        "help/accounts.md",
        include_bytes!("../../../knowledge/eval/shop/help/accounts.md"),
    ),
    (
        "help/orders.md",
        include_bytes!("../../../knowledge/eval/shop/help/orders.md"),
    ),
    (
        "help/plans-and-pricing.md",
        include_bytes!("../../../knowledge/eval/shop/help/plans-and-pricing.md"),
    ),
    (
        "help/privacy.md",
        include_bytes!("../../../knowledge/eval/shop/help/privacy.md"),
    ),
    (
        "help/promotions.md",
        include_bytes!("../../../knowledge/eval/shop/help/promotions.md"),
    ),
    (
        "help/returns.md",
        include_bytes!("../../../knowledge/eval/shop/help/returns.md"),
    ),
    (
        "help/shipping.md",
        include_bytes!("../../../knowledge/eval/shop/help/shipping.md"),
    ),
    (
        "help/sizing.md",
        include_bytes!("../../../knowledge/eval/shop/help/sizing.md"),
    ),
    (
        "help/warranty.md",
        include_bytes!("../../../knowledge/eval/shop/help/warranty.md"),
    ),
    (
        "pages/payment.html",
        include_bytes!("../../../knowledge/eval/shop/pages/payment.html"),
    ),
    (
        "pages/product-care.html",
        include_bytes!("../../../knowledge/eval/shop/pages/product-care.html"),
    ),
    (
        "pages/refunds.html",
        include_bytes!("../../../knowledge/eval/shop/pages/refunds.html"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_is_accepted() {
        let limits = knowledge::DocLimits::default();
        for (name, bytes) in DOCUMENTS {
            let d = knowledge::document::decode(name, bytes, &limits);
            assert!(d.is_ok(), "{name}: {d:?}");
        }
    }
}
