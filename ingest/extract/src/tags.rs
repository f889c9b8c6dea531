//! The HTML elements extraction distinguishes, and what each means for it.

macro_rules! tags {
    ($($v:ident = $n:literal),* $(,)?) => {
        /// An element name (lower case); `Other` for the rest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Tag {
            $(#[doc = concat!("`<", $n, ">`")] $v,)*
            /// Any element extraction does not distinguish.
            Other,
        }

        impl Tag {
            /// The tag of a (any-case) element name.
            pub fn from_name(name: &[u8]) -> Tag {
                let mut buf = [0u8; 12];
                if name.len() > buf.len() {
                    return Tag::Other;
                }
                for (d, s) in buf.iter_mut().zip(name) {
                    *d = s.to_ascii_lowercase();
                }
                match &buf[..name.len()] {
                    $(n if n == $n.as_bytes() => Tag::$v,)*
                    _ => Tag::Other,
                }
            }
            /// The lower-case name.
            pub fn name(self) -> &'static str {
                match self { $(Tag::$v => $n,)* Tag::Other => "" }
            }
        }
    };
}

tags! {
    A = "a", Abbr = "abbr", Address = "address", Article = "article", Aside = "aside",
    Audio = "audio", B = "b", Blockquote = "blockquote", Body = "body", Br = "br",
    Button = "button", Canvas = "canvas", Caption = "caption", Center = "center", Cite = "cite",
    Code = "code", Dd = "dd", Details = "details", Dialog = "dialog", Div = "div", Dl = "dl",
    Dt = "dt", Em = "em", Embed = "embed", Fieldset = "fieldset", Figcaption = "figcaption",
    Figure = "figure", Font = "font", Footer = "footer", Form = "form", Frame = "frame",
    H1 = "h1", H2 = "h2", H3 = "h3", H4 = "h4", H5 = "h5", H6 = "h6", Head = "head",
    Header = "header", Hr = "hr", Html = "html", I = "i", Iframe = "iframe", Img = "img",
    Input = "input", Label = "label", Legend = "legend", Li = "li", Link = "link", Main = "main",
    Mark = "mark", Menu = "menu", Meta = "meta", Nav = "nav", Noscript = "noscript",
    Object = "object", Ol = "ol", Option = "option", P = "p", Picture = "picture", Pre = "pre",
    Q = "q", S = "s", Script = "script", Section = "section", Select = "select",
    Small = "small", Source = "source", Span = "span", Strong = "strong", Style = "style",
    Sub = "sub", Summary = "summary", Sup = "sup", Svg = "svg", Table = "table",
    Tbody = "tbody", Td = "td", Template = "template", Textarea = "textarea", Tfoot = "tfoot",
    Th = "th", Thead = "thead", Time = "time", Title = "title", Tr = "tr", U = "u", Ul = "ul",
    Video = "video", Wbr = "wbr",
}

impl Tag {
    /// Elements whose content is not markup and never article text: skipped whole.
    pub fn is_raw_text(self) -> bool {
        matches!(
            self,
            Tag::Script
                | Tag::Style
                | Tag::Noscript
                | Tag::Template
                | Tag::Textarea
                | Tag::Svg
                | Tag::Iframe
                | Tag::Object
                | Tag::Select
                | Tag::Canvas
                | Tag::Title
        )
    }

    /// Elements without content (never pushed on the open-element stack).
    pub fn is_void(self) -> bool {
        matches!(
            self,
            Tag::Br
                | Tag::Hr
                | Tag::Img
                | Tag::Input
                | Tag::Link
                | Tag::Meta
                | Tag::Source
                | Tag::Wbr
                | Tag::Embed
                | Tag::Frame
        )
    }

    /// Elements that start a new block of text (a paragraph break before and after).
    pub fn is_block(self) -> bool {
        !matches!(
            self,
            Tag::A
                | Tag::Abbr
                | Tag::B
                | Tag::Cite
                | Tag::Code
                | Tag::Em
                | Tag::Font
                | Tag::I
                | Tag::Label
                | Tag::Mark
                | Tag::Q
                | Tag::S
                | Tag::Small
                | Tag::Span
                | Tag::Strong
                | Tag::Sub
                | Tag::Sup
                | Tag::Time
                | Tag::U
                | Tag::Br
                | Tag::Wbr
                | Tag::Img
                | Tag::Other
        )
    }

    /// Table cells: their text joins the row's block, separated by a space.
    pub fn is_cell(self) -> bool {
        matches!(self, Tag::Td | Tag::Th)
    }

    /// Elements that break the text into blocks (block elements other than table cells).
    pub fn breaks(self) -> bool {
        self.is_block() && !self.is_cell()
    }

    /// Headings.
    pub fn is_heading(self) -> bool {
        matches!(
            self,
            Tag::H1 | Tag::H2 | Tag::H3 | Tag::H4 | Tag::H5 | Tag::H6
        )
    }

    /// Elements that are page furniture whatever their class: navigation, side bars, page
    /// footers, forms and their controls, dialogs.
    pub fn is_furniture(self) -> bool {
        matches!(
            self,
            Tag::Nav
                | Tag::Aside
                | Tag::Footer
                | Tag::Form
                | Tag::Button
                | Tag::Menu
                | Tag::Dialog
                | Tag::Fieldset
                | Tag::Legend
                | Tag::Option
                | Tag::Figcaption
                | Tag::Head
        )
    }

    /// Whether the lexer should read this element's attributes.
    pub fn wants_attributes(self) -> bool {
        !matches!(
            self,
            Tag::B | Tag::I | Tag::Em | Tag::Strong | Tag::Br | Tag::Wbr | Tag::Sub | Tag::Sup
        )
    }
}
