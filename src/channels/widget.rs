//! The web widget's settings: the sites that may embed `widget.js`, each with its public
//! key (the tag's `data-site`) and the origins its pages are served from (CORS).

use serde::Deserialize;

/// The widget's sites.
#[derive(Clone, Debug, Default)]
pub struct WidgetConfig {
    /// The sites, by key.
    pub sites: Vec<Site>,
}

/// One site that embeds the widget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The public key in the tag (`data-site`): not a secret, it names the site.
    pub key: String,
    /// The shop's name for people (the panel's title when the tag gives none).
    pub name: String,
    /// The origins (`https://shop.example.com`) whose pages may use it; a request from any
    /// other origin is refused (403) and gets no CORS headers.
    pub origins: Vec<String>,
}

/// The `widget:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WidgetFile {
    #[serde(default)]
    sites: Vec<SiteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    key: String,
    #[serde(default)]
    name: Option<String>,
    origins: Vec<String>,
}

impl WidgetFile {
    /// The sites checked: keys 4-64 of `[A-Za-z0-9_-]` and unique, origins
    /// `scheme://host[:port]` without a path.
    pub(super) fn resolve(self) -> Result<WidgetConfig, String> {
        let mut sites: Vec<Site> = Vec::new();
        for site in self.sites {
            let key_ok = (4..=64).contains(&site.key.len())
                && site
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !key_ok {
                return Err(format!(
                    "widget site key `{}` is not 4-64 letters, digits, `_` or `-`",
                    site.key
                ));
            }
            if sites.iter().any(|s| s.key == site.key) {
                return Err(format!("two widget sites have the key `{}`", site.key));
            }
            for origin in &site.origins {
                let parsed = url::Url::parse(origin).ok();
                let ok = parsed.as_ref().is_some_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && !origin.ends_with('/')
                        && u.query().is_none()
                });
                if !ok {
                    return Err(format!(
                        "widget site `{}`: `{origin}` is not an origin like `https://shop.example.com` (scheme, host, optional port, no path)",
                        site.key
                    ));
                }
            }
            sites.push(Site {
                name: site.name.unwrap_or_else(|| site.key.clone()),
                key: site.key,
                origins: site.origins,
            });
        }
        Ok(WidgetConfig { sites })
    }
}

impl WidgetConfig {
    /// The site with this key.
    pub fn site(&self, key: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.key == key)
    }
}

impl Site {
    /// Whether a page of `origin` may use this site's widget.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}
