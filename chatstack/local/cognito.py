"""A Cognito user pool stand-in: users with attributes and groups, tokens in Cognito's shape, issued
only after the Pre Token Generation trigger ran on a V2_0 event, signed with the pool's own RS256 key.

What it reproduces, because the service's sign-in depends on it (Cognito developer guide, "Understanding
user pool JSON web tokens" and "Pre token generation Lambda trigger"):
- `iss` https://cognito-idp.<region>.amazonaws.com/<poolId>; `token_use` "id" or "access";
  ID tokens carry `aud` (the app client id), access tokens `client_id` and no `aud`;
- `cognito:groups` in both; custom attributes (`custom:tenant`) in the ID token only; the access
  token's `scope` is Cognito's own ("aws.cognito.signin.user.admin") plus the trigger's `scopesToAdd`;
- a trigger that raises refuses the sign-in; claims Cognito reserves cannot be set by the trigger.
  (Where Cognito documents that it ignores or rejects such a claim, this stand-in refuses the sign-in:
  a misconfiguration should fail a test here, never pass silently.)
It also answers the Cognito Identity Provider API calls a test or an operator makes to create users
and sign in (`AdminCreateUser`, `AdminSetUserPassword`, `AdminAddUserToGroup`, `InitiateAuth` with
USER_PASSWORD_AUTH), so boto3's `cognito-idp` client works against it with `endpoint_url`. SRP is not
implemented: the password flow stands in for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chatstack.local.identity import signing_key

Trigger = Callable[[dict[str, Any]], dict[str, Any]]
COGNITO_SCOPE = "aws.cognito.signin.user.admin"
# Claims a pre-token trigger may not add, override or suppress (Cognito developer guide).
RESERVED_CLAIMS = frozenset(
    {
        "acr", "amr", "aud", "at_hash", "auth_time", "azp", "client_id", "cognito:username", "exp",
        "iat", "identities", "iss", "jti", "nbf", "nonce", "origin_jti", "sub", "token_use",
        "event_id", "username",
    }
)  # fmt: skip
ACCESS_ONLY_RESERVED = frozenset({"scope"})  # an access token's scopes change only through scopesToAdd


class SignInRefused(Exception):
    """Cognito answers NotAuthorizedException, or UserLambdaValidationException when the trigger fails."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NewPasswordRequired(SignInRefused):
    """The user's password is temporary (FORCE_CHANGE_PASSWORD): InitiateAuth answers a challenge."""

    def __init__(self, username: str) -> None:
        super().__init__("NewPasswordRequired", f"{username} must set a new password first.")


@dataclass
class User:
    username: str
    sub: str
    attributes: dict[str, str]
    groups: list[str] = field(default_factory=list)
    password_hash: str = ""
    salt: bytes = b""
    temporary: bool = False  # FORCE_CHANGE_PASSWORD: a sign-in gets a challenge, not tokens


@dataclass(frozen=True, slots=True)
class Tokens:
    id_token: str
    access_token: str
    expires_in: int


def _password_hash(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1).hex()


class CognitoUserPool:
    def __init__(
        self,
        directory: Path,
        *,
        region: str = "us-east-1",
        pool_id: str = "",
        client_id: str = "",
        trigger: Trigger | None = None,
        token_ttl_s: int = 3600,
        custom_attributes: tuple[str, ...] | None = None,
        password_policy: dict[str, Any] | None = None,
    ) -> None:
        """`custom_attributes` and `password_policy`: the template's schema (`custom:` names) and
        `Policies.PasswordPolicy`, which Cognito enforces; None: anything goes (tests of the flow)."""
        self.region = region
        self.custom_attributes = custom_attributes
        self.password_policy = password_policy or {}
        self.pool_id = pool_id or f"{region}_LocalPool"
        self.client_id = client_id or "localappclient0000000000"
        self.trigger = trigger
        self.token_ttl_s = token_ttl_s
        self.users: dict[str, User] = {}
        self.lock = threading.Lock()
        self.key = self._load_key(directory)
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        self.kid = hashlib.sha256(public["n"].encode()).hexdigest()[:20]
        self.public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    @staticmethod
    def _load_key(directory: Path) -> rsa.RSAPrivateKey:
        key: rsa.RSAPrivateKey = signing_key(
            directory / "cognito-signing-key.pem",
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            rsa.RSAPrivateKey,
            "an RSA key",
        )
        return key

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    # ---- users ----------------------------------------------------------------------------------
    def create_user(self, username: str, attributes: dict[str, str], password: str = "") -> User:
        known = self.custom_attributes
        custom = [a for a in attributes if a.startswith("custom:")]
        unknown = sorted(a for a in custom if known is not None and a not in known)
        if unknown:  # Cognito's own wording for an attribute the pool's schema does not define
            raise SignInRefused(
                "InvalidParameterException",
                f"Attributes did not conform to the schema: Type for attribute {{{unknown[0]}}} "
                "could not be determined",
            )
        with self.lock:
            if username in self.users:
                raise SignInRefused("UsernameExistsException", "User account already exists.")
            user = User(username, str(uuid.uuid4()), dict(attributes))
            self.users[username] = user
        if password:
            self.set_password(username, password)
        return user

    def set_password(self, username: str, password: str, *, permanent: bool = True) -> None:
        """`permanent=False` (AdminSetUserPassword's default) leaves the user in FORCE_CHANGE_PASSWORD."""
        user = self._user(username)
        self._check_policy(password)
        user.salt = os.urandom(16)
        user.password_hash = _password_hash(password, user.salt)
        user.temporary = not permanent

    def _check_policy(self, password: str) -> None:
        """The pool's PasswordPolicy, as Cognito applies it to AdminSetUserPassword."""
        p = self.password_policy
        classes = [
            ("RequireUppercase", str.isupper, "uppercase"),
            ("RequireLowercase", str.islower, "lowercase"),
            ("RequireNumbers", str.isdigit, "numeric"),
            ("RequireSymbols", lambda c: not c.isalnum(), "symbol"),
        ]
        why = "Password not long enough" if len(password) < int(p.get("MinimumLength", 0)) else ""
        for setting, test, name in classes:
            if not why and p.get(setting) and not any(test(c) for c in password):
                why = f"Password must have {name} characters"
        if why:
            raise SignInRefused("InvalidPasswordException", f"Password did not conform with policy: {why}")

    def add_to_group(self, username: str, group: str) -> None:
        user = self._user(username)
        if group not in user.groups:
            user.groups.append(group)

    def _user(self, username: str) -> User:
        user = self.users.get(username)
        if user is None:
            raise SignInRefused("UserNotFoundException", "User does not exist.")
        return user

    # ---- sign-in --------------------------------------------------------------------------------
    def sign_in(self, username: str, password: str, *, client_id: str = "") -> Tokens:
        user = self.users.get(username)
        candidate = _password_hash(password, user.salt) if user and user.salt else ""
        if user is None or not user.password_hash or not hmac.compare_digest(candidate, user.password_hash):
            raise SignInRefused("NotAuthorizedException", "Incorrect username or password.")
        if client_id and client_id != self.client_id:
            raise SignInRefused("ResourceNotFoundException", "User pool client does not exist.")
        if user.temporary:
            raise NewPasswordRequired(username)
        return self.issue(user)

    def issue(self, user: User) -> Tokens:
        """The tokens of a signed-in user, after the pre-token trigger."""
        now = int(time.time())
        event_id, origin_jti = str(uuid.uuid4()), str(uuid.uuid4())
        common = {
            "sub": user.sub,
            "iss": self.issuer,
            "origin_jti": origin_jti,
            "event_id": event_id,
            "auth_time": now,
            "iat": now,
            "exp": now + self.token_ttl_s,
        }
        groups = list(user.groups)
        id_claims: dict[str, Any] = {
            **common,
            "aud": self.client_id,
            "token_use": "id",
            "cognito:username": user.username,
            "jti": str(uuid.uuid4()),
            **{k: v for k, v in user.attributes.items() if k != "sub"},
        }
        access_claims: dict[str, Any] = {
            **common,
            "client_id": self.client_id,
            "token_use": "access",
            "scope": COGNITO_SCOPE,
            "username": user.username,
            "jti": str(uuid.uuid4()),
        }
        scopes = [COGNITO_SCOPE]
        if self.trigger is not None:
            details = self._run_trigger(user, groups)
            groups = list((details.get("groupOverrideDetails") or {}).get("groupsToOverride") or groups)
            self._apply(id_claims, details.get("idTokenGeneration") or {}, access=False)
            access = details.get("accessTokenGeneration") or {}
            self._apply(access_claims, access, access=True)
            scopes += [s for s in access.get("scopesToAdd") or [] if s not in scopes]
            scopes = [s for s in scopes if s not in (access.get("scopesToSuppress") or [])]
            access_claims["scope"] = " ".join(scopes)
        if groups:
            id_claims["cognito:groups"] = access_claims["cognito:groups"] = groups
        headers = {"kid": self.kid}
        return Tokens(
            id_token=jwt.encode(id_claims, self.key, algorithm="RS256", headers=headers),
            access_token=jwt.encode(access_claims, self.key, algorithm="RS256", headers=headers),
            expires_in=self.token_ttl_s,
        )

    def _run_trigger(self, user: User, groups: list[str]) -> dict[str, Any]:
        assert self.trigger is not None
        event = {
            "version": "2",
            "triggerSource": "TokenGeneration_Authentication",
            "region": self.region,
            "userPoolId": self.pool_id,
            "userName": user.username,
            "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": self.client_id},
            "request": {
                "userAttributes": {"sub": user.sub, "cognito:user_status": "CONFIRMED", **user.attributes},
                "groupConfiguration": {
                    "groupsToOverride": groups,
                    "iamRolesToOverride": [],
                    "preferredRole": None,
                },
                "scopes": [COGNITO_SCOPE],
            },
            "response": {"claimsAndScopeOverrideDetails": None},
        }
        try:
            result = self.trigger(event)
        except Exception as exc:
            message = f"PreTokenGeneration failed with error {exc}."
            raise SignInRefused("UserLambdaValidationException", message) from None
        details = ((result or {}).get("response") or {}).get("claimsAndScopeOverrideDetails")
        if not isinstance(details, dict):
            raise SignInRefused(
                "InvalidLambdaResponseException",
                "The pre-token trigger answered no claimsAndScopeOverrideDetails.",
            )
        return details

    @staticmethod
    def _apply(claims: dict[str, Any], generation: dict[str, Any], *, access: bool) -> None:
        reserved = RESERVED_CLAIMS | (ACCESS_ONLY_RESERVED if access else frozenset())
        adds = generation.get("claimsToAddOrOverride") or {}
        suppress = generation.get("claimsToSuppress") or []
        bad = sorted((set(adds) | set(suppress)) & reserved)
        if bad:
            raise SignInRefused(
                "InvalidLambdaResponseException",
                f"The pre-token trigger may not set {bad} in the {'access' if access else 'ID'} token.",
            )
        for name in suppress:
            claims.pop(name, None)
        claims.update(adds)


# ---- the Cognito Identity Provider API (JSON protocol), for boto3's `cognito-idp` client ----------
TARGET_PREFIX = "AWSCognitoIdentityProviderService."
LOOPBACK = ("127.0.0.1", "::1")


def _attributes(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {str(a["Name"]): str(a.get("Value", "")) for a in items or []}


def api_call(pool: CognitoUserPool, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    """One API operation; raises SignInRefused with Cognito's error code."""
    if operation != "InitiateAuth" and body.get("UserPoolId") != pool.pool_id:
        raise SignInRefused("ResourceNotFoundException", "User pool does not exist.")
    if operation == "AdminCreateUser":
        user = pool.create_user(str(body["Username"]), _attributes(body.get("UserAttributes")))
        attrs = [{"Name": k, "Value": v} for k, v in {"sub": user.sub, **user.attributes}.items()]
        return {"User": {"Username": user.username, "Attributes": attrs, "Enabled": True,
                         "UserStatus": "FORCE_CHANGE_PASSWORD"}}  # fmt: skip
    if operation == "AdminSetUserPassword":
        permanent = body.get("Permanent") is True  # the API's default is a temporary password
        pool.set_password(str(body["Username"]), str(body["Password"]), permanent=permanent)
        return {}
    if operation == "AdminAddUserToGroup":
        pool.add_to_group(str(body["Username"]), str(body["GroupName"]))
        return {}
    if operation == "InitiateAuth":
        if body.get("AuthFlow") != "USER_PASSWORD_AUTH":
            message = "This stand-in signs in with USER_PASSWORD_AUTH."
            raise SignInRefused("InvalidParameterException", message)
        params = body.get("AuthParameters") or {}
        username, password = str(params.get("USERNAME", "")), str(params.get("PASSWORD", ""))
        client = body.get("ClientId")
        if not isinstance(client, str) or not client:
            raise SignInRefused("InvalidParameterException", "ClientId is required.")
        try:
            tokens = pool.sign_in(username, password, client_id=client)
        except NewPasswordRequired:  # Cognito answers a challenge, not tokens (RespondToAuthChallenge)
            return {"ChallengeName": "NEW_PASSWORD_REQUIRED", "Session": str(uuid.uuid4()),
                    "ChallengeParameters": {"USER_ID_FOR_SRP": username, "requiredAttributes": "[]",
                                            "userAttributes": "{}"}}  # fmt: skip
        return {"AuthenticationResult": {"IdToken": tokens.id_token, "AccessToken": tokens.access_token,
                                         "ExpiresIn": tokens.expires_in, "TokenType": "Bearer"}}  # fmt: skip
    raise SignInRefused("InvalidAction", f"{operation} is not served by the local Cognito stand-in.")


def routes(pool: CognitoUserPool, prefix: str = "/cognito-idp") -> list[Any]:
    """Starlette routes: the API at `{prefix}/` and the pool's JWKS where Cognito publishes it."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def api(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith(TARGET_PREFIX):
            return JSONResponse({"__type": "UnknownOperationException"}, status_code=400)
        operation = target[len(TARGET_PREFIX) :]
        client = request.client.host if request.client else ""
        if operation.startswith("Admin") and client not in LOOPBACK:
            # Cognito's Admin* calls need IAM credentials; this stand-in has none to check, so it
            # serves them only to this machine, even when `up` listens on every interface.
            refusal = {"__type": "NotAuthorizedException", "message": "Admin calls are local-only."}
            return JSONResponse(refusal, status_code=400, media_type="application/x-amz-json-1.1")
        try:
            body = json.loads(await request.body() or b"{}")
            result = api_call(pool, operation, body)
        except SignInRefused as exc:
            return JSONResponse({"__type": exc.code, "message": str(exc)}, status_code=400,
                                media_type="application/x-amz-json-1.1")  # fmt: skip
        except (KeyError, ValueError) as exc:
            return JSONResponse({"__type": "InvalidParameterException", "message": f"Bad request: {exc}"},
                                status_code=400, media_type="application/x-amz-json-1.1")  # fmt: skip
        return JSONResponse(result, media_type="application/x-amz-json-1.1")

    async def jwks(_: Request) -> JSONResponse:
        return JSONResponse(pool.jwks())

    return [
        Route(prefix, api, methods=["POST"]),  # boto3 posts to the endpoint URL's path itself
        Route(f"{prefix}/", api, methods=["POST"]),
        Route(f"{prefix}/{pool.pool_id}/.well-known/jwks.json", jwks),
    ]
