use backbone_core::events_contract;

#[events_contract]
pub trait Parameters {
    async fn tuple_pattern(&self, (a, b): (u32, u32));
    async fn wildcard(&self, _: u32);
    async fn borrowed_str(&self, name: &str);
    async fn borrowed_slice(&self, items: &[u8]);
    async fn borrowed_struct(&self, user: &Vec<String>);
    async fn nested_borrow(&self, names: Vec<&'static str>);
    async fn lifetime(&self, name: std::borrow::Cow<'a, str>);
    async fn impl_trait(&self, name: impl Into<String>);
    async fn context(&self, ctx: String);
    async fn repeated(&self, id: u64, id: u64);
}

fn main() {}
