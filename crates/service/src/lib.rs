//! The shop: orders, payments, callback intake and the reconciler (not built yet).
