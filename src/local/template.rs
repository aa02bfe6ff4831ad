//! The chat template: the model's own Jinja template from the GGUF metadata
//! (`tokenizer.chat_template`), rendered with minijinja; ChatML when the model has none; or the
//! one a policy names for a model (`template:`: a built-in format or a Jinja file).

use super::LocalError;
use crate::api::Role;
use minijinja::{context, Environment, ErrorKind};

/// ChatML, the format of both default models, used when a model carries no template.
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Gemma's turn format (`<start_of_turn>user` / `model`, `<end_of_turn>`), as Gemma's own
/// template has it: no system role, so a system message opens the first user turn.
const GEMMA: &str = "{{ bos_token }}{%- set prefix = '' -%}{%- set turns = messages -%}{%- if messages and messages[0].role == 'system' -%}{%- set prefix = messages[0].content + '\n\n' -%}{%- set turns = messages[1:] -%}{%- endif -%}{%- for message in turns -%}<start_of_turn>{{ 'model' if message.role == 'assistant' else 'user' }}\n{{ (prefix if loop.first else '') + message.content | trim }}<end_of_turn>\n{% endfor -%}{%- if add_generation_prompt -%}<start_of_turn>model\n{% endif -%}";

/// The built-in formats a policy can name instead of a Jinja file.
pub const BUILT_IN: [&str; 2] = ["chatml", "gemma"];

/// The Jinja source a policy's `template:` names: a built-in format (`chatml`, `gemma`) or the
/// path of a Jinja file.
///
/// Errors: the file cannot be read.
pub fn source_of(choice: &str) -> Result<String, LocalError> {
    match choice {
        "chatml" => Ok(CHATML.to_string()),
        "gemma" => Ok(GEMMA.to_string()),
        path => std::fs::read_to_string(path).map_err(|e| {
            LocalError::Template(format!(
                "cannot read the chat template {path}: {e} (built in: {})",
                BUILT_IN.join(", ")
            ))
        }),
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    tools: bool,
}

/// One message as chat templates read it (Hugging Face's conversation format): `role`,
/// `content`, and on an assistant turn its `tool_calls` (`{"id", "type": "function",
/// "function": {"name", "arguments"}}`, the arguments an object), on a tool turn the
/// `tool_call_id` and `name` it answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TemplateMessage {
    pub role: &'static str,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl TemplateMessage {
    /// A message with text only.
    pub fn text(role: Role, content: String) -> TemplateMessage {
        TemplateMessage {
            role: role_name(role),
            content,
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

/// Python's `json.dumps` separators (`", "`, `": "`), as Hugging Face's chat templates' `tojson`
/// writes JSON (transformers' `tojson` filter: keys in their order, no HTML escaping), so tools and
/// tool-call arguments reach the model as it saw them in training.
struct PythonStyle;

/// `", "` before every item but the first.
fn item_separator<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// The `tojson` filter of Hugging Face's chat templates (`indent` is accepted and, as the
/// templates this engine runs use none, ignored).
fn tojson(
    value: minijinja::Value,
    _kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    use serde::Serialize;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonStyle);
    value
        .serialize(&mut ser)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(minijinja::Value::from_safe_string(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// The tool-call syntax the on-box engine parses (Hermes's, which Qwen2.5 uses): a template
/// offers tools in it when its tools section names this tag.
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool | Role::Function => "tool",
    }
}

impl ChatTemplate {
    /// Compiles `source` (or ChatML when `None`); `bos`/`eos` are the texts of those tokens.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<ChatTemplate, LocalError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(
                    minijinja::Error::new(ErrorKind::InvalidOperation, msg.clone())
                        .with_source(Refusal(msg)),
                )
            },
        );
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| {
                LocalError::Template(format!("the chat template does not compile: {e}"))
            })?;
        let mut t = ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
            tools: false,
        };
        t.tools = t.offers_tools();
        Ok(t)
    }

    /// Whether the template has a tools section in the syntax the engine parses: rendering a
    /// probe tool changes the prompt, and the prompt then names the `<tool_call>` tag.
    fn offers_tools(&self) -> bool {
        let user = [TemplateMessage::text(Role::User, "x".into())];
        let probe = [serde_json::json!({"type": "function", "function": {
            "name": "switchyard_probe", "description": "probe",
            "parameters": {"type": "object", "properties": {}}}})];
        match (
            self.render_with(&user, None),
            self.render_with(&user, Some(&probe)),
        ) {
            (Ok(plain), Ok(with)) => {
                plain != with && with.contains("switchyard_probe") && with.contains(TOOL_CALL_OPEN)
            }
            _ => false,
        }
    }

    /// Whether tools can be offered to the model (see [`ChatTemplate::offers_tools`]).
    pub fn has_tools(&self) -> bool {
        self.tools
    }

    /// The prompt text for `messages`, ending where the assistant's answer starts.
    pub fn render(&self, messages: &[(Role, String)]) -> Result<String, LocalError> {
        let msgs: Vec<TemplateMessage> = messages
            .iter()
            .map(|(r, c)| TemplateMessage::text(*r, c.clone()))
            .collect();
        self.render_with(&msgs, None)
    }

    /// The prompt text for `messages`, offering `tools` (OpenAI's `tools` entries, as sent)
    /// when given.
    pub fn render_with(
        &self,
        messages: &[TemplateMessage],
        tools: Option<&[serde_json::Value]>,
    ) -> Result<String, LocalError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| LocalError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => true,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| match refusal(&e) {
            Some(message) => LocalError::TemplateRefused(message),
            None => LocalError::Template(format!("the chat template failed: {e}")),
        })
    }
}

/// The message of a template's `raise_exception`, carried as the error's source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

/// The template's own refusal, when `e` (or an error it wraps) is one.
fn refusal(e: &minijinja::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(Refusal(message)) = err.downcast_ref::<Refusal>() {
            return Some(message.clone());
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_system_and_user_turns() {
        let t = ChatTemplate::new(None, "", "<|im_end|>").unwrap();
        let s = t
            .render(&[(Role::System, "be brief".into()), (Role::User, "hi".into())])
            .unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn the_gemma_format_folds_the_system_prompt_into_the_first_user_turn() {
        let t = ChatTemplate::new(Some(&source_of("gemma").unwrap()), "<bos>", "<eos>").unwrap();
        let s = t
            .render(&[
                (Role::System, "be brief".into()),
                (Role::User, "hi".into()),
                (Role::Assistant, "hello".into()),
                (Role::User, "bye ".into()),
            ])
            .unwrap();
        assert_eq!(
            s,
            "<bos><start_of_turn>user\nbe brief\n\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n<start_of_turn>user\nbye<end_of_turn>\n<start_of_turn>model\n"
        );
        assert!(source_of("/no/such/template.jinja")
            .unwrap_err()
            .to_string()
            .contains("built in: chatml, gemma"));
    }

    #[test]
    fn a_template_raising_an_exception_is_an_error() {
        let t = ChatTemplate::new(
            Some(
                "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}",
            ),
            "",
            "",
        )
        .unwrap();
        let e = t.render(&[(Role::System, "x".into())]).unwrap_err();
        assert!(e.to_string().contains("user first"), "{e}");
        // A refusal is told apart from a template that fails on its own.
        assert!(
            matches!(&e, LocalError::TemplateRefused(m) if m == "user first"),
            "{e:?}"
        );
        let broken = ChatTemplate::new(Some("{{ messages[0].nothing.deeper }}"), "", "").unwrap();
        let e = broken.render(&[(Role::User, "x".into())]).unwrap_err();
        assert!(matches!(e, LocalError::Template(_)), "{e:?}");
    }
}
