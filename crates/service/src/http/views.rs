//! The API's JSON for catalog and order records: the store's types stay free of the
//! wire format, and a field renamed in one does not silently change the other.

use serde::Serialize;

use crate::store;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    product_id: i64,
    name: String,
    price: i64,
    stock: i64,
}

impl From<store::Product> for Product {
    fn from(p: store::Product) -> Self {
        Product { product_id: p.product_id, name: p.name, price: p.price, stock: p.stock }
    }
}

/// A product as the catalog's admin sees it: where all of its stock is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    product_id: i64,
    name: String,
    price: i64,
    /// For sale now.
    available: i64,
    /// Held by orders whose payment is not settled yet.
    reserved: i64,
    sold: i64,
}

impl From<store::CatalogEntry> for CatalogEntry {
    fn from(p: store::CatalogEntry) -> Self {
        CatalogEntry {
            product_id: p.product_id,
            name: p.name,
            price: p.price,
            available: p.available,
            reserved: p.reserved,
            sold: p.sold,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    product_id: i64,
    name: String,
    unit_price: i64,
    quantity: i64,
    amount: i64,
}

impl From<store::OrderItem> for OrderItem {
    fn from(i: store::OrderItem) -> Self {
        OrderItem {
            product_id: i.product_id,
            name: i.name,
            unit_price: i.unit_price,
            quantity: i.quantity,
            amount: i.amount,
        }
    }
}

/// Each of a list in its JSON form.
pub fn all<T, V: From<T>>(records: Vec<T>) -> Vec<V> {
    records.into_iter().map(V::from).collect()
}
