//! The image service's tables.

use super::model::{Image, Member};
use crate::store::Table;

pub const IMAGES: Table<Image> = Table::new("image.images");
/// `image_id|member_id` → member.
pub const MEMBERS: Table<Member> = Table::new("image.members");
/// `member_id|image_id` → (), to list the images shared with a project.
pub const SHARED_WITH: Table<()> = Table::new("image.shared_with");
