//! Where requests for a function go when they are sent to its Service: a URL with `{name}`,
//! `{namespace}` and `{port}`.

use super::InvalidKubernetesOption;
use crate::FunctionId;

/// A checked endpoint template.
#[derive(Clone)]
pub(super) struct EndpointTemplate {
    pub(super) text: String,
    pub(super) needs_port: bool,
}

impl EndpointTemplate {
    pub(super) fn parse(text: &str) -> Result<Self, InvalidKubernetesOption> {
        let invalid =
            |why: String| InvalidKubernetesOption(format!("endpoint template {text:?}: {why}"));
        // Every `{...}` must be a known placeholder.
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| invalid("a `{` is not closed".into()))?;
            let key = &rest[open + 1..open + close];
            if !matches!(key, "name" | "namespace" | "port") {
                return Err(invalid(format!(
                    "unknown placeholder {{{key}}} (use {{name}}, {{namespace}}, {{port}})"
                )));
            }
            rest = &rest[open + close + 1..];
        }
        let sample = text
            .replace("{name}", "f")
            .replace("{namespace}", "ns")
            .replace("{port}", "8080");
        let uri: http::Uri = sample
            .parse()
            .map_err(|e| invalid(format!("not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(invalid("expected http://host[:port][/path]".into()));
        }
        Ok(Self {
            text: text.to_string(),
            needs_port: text.contains("{port}"),
        })
    }

    pub(super) fn fill(&self, function: &FunctionId, port: Option<u16>) -> String {
        let mut url = self
            .text
            .replace("{name}", function.name())
            .replace("{namespace}", function.namespace());
        if let Some(port) = port {
            url = url.replace("{port}", &port.to_string());
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_ENDPOINT_TEMPLATE;
    use super::*;

    #[test]
    fn endpoint_templates_are_checked_and_filled() {
        let id = FunctionId::new("figlet", "fns").unwrap();
        let default = EndpointTemplate::parse(DEFAULT_ENDPOINT_TEMPLATE).unwrap();
        assert!(default.needs_port);
        assert_eq!(
            default.fill(&id, Some(8080)),
            "http://figlet.fns.svc.cluster.local:8080"
        );
        let fixed = EndpointTemplate::parse("http://127.0.0.1:9000/{namespace}/{name}").unwrap();
        assert!(!fixed.needs_port);
        assert_eq!(fixed.fill(&id, None), "http://127.0.0.1:9000/fns/figlet");
        for (bad, why) in [
            ("http://{nme}:80", "unknown placeholder {nme}"),
            ("http://{name:80", "not closed"),
            ("https://{name}:{port}", "expected http://"),
            ("{name}", "expected http://"),
            ("http://{name} x:{port}", "not a URL"),
        ] {
            let err = EndpointTemplate::parse(bad).err().unwrap().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
