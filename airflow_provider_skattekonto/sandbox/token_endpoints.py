"""The OAuth2 token endpoints: ``/oauth2/v1/sysorg/token`` (client credentials) and ``/oauth2/v1/org/token``
(the stored refresh token of the authorization-code flow)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, unquote

from airflow_provider_skattekonto.sandbox.connection import ConnectionHandler, Reply, json_body, media_type
from airflow_provider_skattekonto.sandbox.protocol import ISSUABLE_SCOPES, ROUTE_TOKEN_SYSORG, SCOPE
from airflow_provider_skattekonto.sandbox.registry import same_secret


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply(
        status,
        json_body({"error": error, "error_description": description}),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


class TokenEndpoints(ConnectionHandler):
    """Issues access tokens after checking the client, its secret or certificate, and the scope."""

    def _token(self, body: bytes) -> None:
        sandbox = self.sandbox
        sysorg = self._route == ROUTE_TOKEN_SYSORG
        if media_type(self.headers.get("Content-Type")) != "application/x-www-form-urlencoded":
            raise _oauth_error(400, "invalid_request", "The body must be application/x-www-form-urlencoded")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise _oauth_error(400, "invalid_request", "The form body cannot be parsed") from None
        repeated = sorted(key for key, values in parsed.items() if len(values) > 1)
        if repeated:
            raise _oauth_error(400, "invalid_request", f"Parameter(s) repeated: {', '.join(repeated)}")
        form = {key: values[0] for key, values in parsed.items()}
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _oauth_error(400, "invalid_request", "grant_type is required")
        expected = "client_credentials" if sysorg else "refresh_token"
        if grant_type != expected:
            raise _oauth_error(400, "unsupported_grant_type", f"This endpoint supports grant_type={expected} only")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = self.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8")
                basic_id, _, basic_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _oauth_error(401, "invalid_client", "Malformed Basic client authentication") from None
            client_id, client_secret = unquote(basic_id), unquote(basic_secret)
        if not client_id:
            raise _oauth_error(400, "invalid_request", "client_id is required")
        registration = sandbox.registry.by_oauth_client_id(client_id)
        if registration is None:
            raise _oauth_error(401, "invalid_client", "Unknown client_id")
        if client_secret is not None and not same_secret(client_secret, registration.oauth_client_secret):
            raise _oauth_error(401, "invalid_client", "Client authentication failed")
        peer = self._peer_certificate()
        if peer.organisation_number is None:
            raise _oauth_error(401, "invalid_client", f"Client certificate refused: {peer.problem}")
        scope_text = form.get("scope")
        if sysorg:
            if client_secret is None and peer.organisation_number != registration.organisation_number:
                raise _oauth_error(
                    401,
                    "invalid_client",
                    "Without client_secret the designated certificate of the client's organisation is required",
                )
            if not scope_text:
                raise _oauth_error(400, "invalid_scope", f"scope is required ({SCOPE})")
        else:
            if client_secret is None:
                raise _oauth_error(401, "invalid_client", "client_secret is required for this flow")
            refresh_token = form.get("refresh_token")
            if not refresh_token:
                raise _oauth_error(400, "invalid_request", "refresh_token is required")
            owner = sandbox.registry.by_refresh_token(refresh_token)
            if owner is None or owner.label != registration.label:
                raise _oauth_error(
                    400, "invalid_grant", "The refresh token is unknown or was not issued to this client"
                )
            if peer.organisation_number != registration.organisation_number:
                raise _oauth_error(
                    401, "invalid_client", "The certificate belongs to another organisation than the client"
                )
            scope_text = scope_text or SCOPE
        scopes = scope_text.split()
        unknown = [scope for scope in scopes if scope not in ISSUABLE_SCOPES]
        if not scopes or unknown:
            raise _oauth_error(400, "invalid_scope", f"Unknown scope(s): {' '.join(unknown) or '(empty)'}")
        scope = " ".join(dict.fromkeys(scopes))
        lifetime = sandbox.settings.token_lifetime_seconds
        token, _ = sandbox.registry.issue_token(
            registration, peer.organisation_number, scope, sandbox.clock.now(), lifetime
        )
        answer = {"access_token": token, "expires_in": int(lifetime), "token_type": "Bearer", "scope": scope}
        if not sysorg and sandbox.settings.rotate_refresh_tokens:
            answer["refresh_token"] = sandbox.registry.rotate_refresh_token(registration)
        self._send(200, json_body(answer), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
