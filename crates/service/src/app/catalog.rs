//! The catalog: what is for sale (buyers) and the admin's changes to it (create, rename
//! or reprice, restock). Every admin change is logged with who made it and what it was,
//! the shop's audit trail for prices and stock.

use std::sync::Arc;

use super::listings::Listings;
use crate::domain::{Money, ProductId};
use crate::store::{CatalogEntry, CatalogStore, Product, StockChange, StoreError};

#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn CatalogStore>,
    /// Checkout's quotes, told of this instance's renames and reprices.
    listings: Listings,
}

impl Catalog {
    pub fn new(store: Arc<dyn CatalogStore>, listings: Listings) -> Catalog {
        Catalog { store, listings }
    }

    /// Products with their price and the stock for sale.
    pub async fn for_sale(&self) -> Result<Vec<Product>, StoreError> {
        self.store.products().await
    }

    /// Every product with where its stock is (available, reserved, sold).
    pub async fn entries(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        self.store.catalog().await
    }

    /// Products with at most `threshold` for sale.
    pub async fn low_stock(&self, threshold: i64) -> Result<Vec<CatalogEntry>, StoreError> {
        Ok(self.entries().await?.into_iter().filter(|p| p.available <= threshold).collect())
    }

    pub async fn create(
        &self,
        operator: &str,
        name: &str,
        price: Money,
        stock: i64,
    ) -> Result<CatalogEntry, StoreError> {
        let product = self.store.create_product(name, price, stock).await?;
        tracing::warn!(
            operator,
            product = product.product_id,
            name,
            price = price.get(),
            stock,
            "operator created a product"
        );
        Ok(product)
    }

    /// `None`: no such product.
    pub async fn update(
        &self,
        operator: &str,
        id: i64,
        name: Option<&str>,
        price: Option<Money>,
    ) -> Result<Option<CatalogEntry>, StoreError> {
        // What it was, for the log line only: this product's listing, not the catalog.
        let before = match self.store.listings(&[ProductId(id)]).await {
            Ok(mut listed) => listed.pop().map(|(_, listing)| listing),
            Err(StoreError::ProductNotFound(_)) => None,
            Err(error) => return Err(error),
        };
        let Some(product) = self.store.update_product(id, name, price).await? else { return Ok(None) };
        self.listings.forget(ProductId(id));
        tracing::warn!(
            operator,
            product = id,
            old_name = before.as_ref().map(|l| l.name.as_str()),
            name = product.name,
            old_price = before.as_ref().map(|l| l.price.get()),
            price = product.price,
            "operator changed a product"
        );
        Ok(Some(product))
    }

    /// `None`: no such product.
    pub async fn change_stock(
        &self,
        operator: &str,
        id: i64,
        change: StockChange,
    ) -> Result<Option<CatalogEntry>, StoreError> {
        let Some(product) = self.store.change_stock(id, change).await? else { return Ok(None) };
        tracing::warn!(
            operator,
            product = id,
            ?change,
            available = product.available,
            reserved = product.reserved,
            "operator changed stock"
        );
        Ok(Some(product))
    }
}
