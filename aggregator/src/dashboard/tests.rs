use super::*;

#[test]
fn token_from_header_or_session_from_cookie() {
    let req = axum::http::Request::builder()
        .header(header::AUTHORIZATION, "Bearer veil_abc")
        .body(())
        .expect("request");
    let (mut parts, ()) = req.into_parts();
    assert!(matches!(presented(&parts), Some(Presented::Bearer(t)) if t == "veil_abc"));
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.insert(
        header::COOKIE,
        HeaderValue::from_static("other=1; veil_session=veil_xyz; x=2"),
    );
    assert!(matches!(presented(&parts), Some(Presented::Session(t)) if t == "veil_xyz"));
    parts
        .headers
        .insert(header::COOKIE, HeaderValue::from_static("veil_session="));
    assert!(presented(&parts).is_none());
}

#[test]
fn refused_token_actor_names_only_the_public_id() {
    let t = "veil_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert!(tokens::well_formed(t));
    assert_eq!(
        token_actor_hint(t),
        "spiffe://veil/role/organizer/token-0123456789abcdef"
    );
    assert_eq!(token_actor_hint("junk"), crate::auth::UNKNOWN_ACTOR);
}

#[test]
fn page_has_no_inline_script_or_remote_asset() {
    for asset in [INDEX_HTML, APP_JS, APP_CSS] {
        assert!(!asset.contains("http://") || asset.contains("http://www.w3.org/2000/svg"));
        assert!(!asset.contains("https://"));
    }
    assert!(!INDEX_HTML.contains("<script>"));
    assert!(!INDEX_HTML.contains("style="));
}
