// Where the page's token comes from, and sign-in through an OIDC provider (Cognito's hosted UI) with PKCE.
//
// Locally `chatstack up` prints a page URL with ?token=...: it is read once, kept in sessionStorage
// (this tab only) and removed from the address bar so it does not linger in history or get shared.
// In the cloud the page is configured with an issuer (config.json) and signs in with the
// authorization-code flow and PKCE (RFC 7636): no token ever appears in a URL, only a one-time code.

const TOKEN_KEY = "chatstack.token";
const PKCE_KEY = "chatstack.pkce";

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function keep(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** The claims of a JWT, without checking it (the server does): used for expiry and the user's name. */
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

/** Seconds until the token expires (negative once it has); Infinity when it has no readable `exp`. */
export function secondsLeft(token) {
  const exp = claims(token)?.exp;
  return typeof exp === "number" ? exp - Date.now() / 1000 : Infinity;
}

/** Take a token handed over in the URL (?token=...) and remove it from the address bar. */
export function adoptTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return false;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  if (token) keep(token);
  return Boolean(token);
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function discover(issuer) {
  const r = await fetch(issuer.replace(/\/$/, "") + "/.well-known/openid-configuration");
  if (!r.ok) throw new Error("The sign-in service is not reachable.");
  return r.json();
}

function redirectUri(oidc) {
  return oidc.redirectUri || location.origin + location.pathname;
}

/** Go to the provider's sign-in page (authorization-code flow, S256 PKCE challenge, state). */
export async function signIn(oidc) {
  const meta = await discover(oidc.issuer);
  const verifier = randomString(48);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomString(16);
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state, hash: location.hash }));
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: oidc.clientId,
    redirect_uri: redirectUri(oidc),
    scope: oidc.scope || "openid",
    state,
    code_challenge: base64url(digest),
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

/**
 * Back from the provider with ?code=&state=: check the state, trade the code and the PKCE verifier
 * for tokens, keep the one the API accepts, and clean the address bar. Returns false when the URL
 * carries no sign-in answer; throws with a sentence for the user when sign-in failed.
 */
export async function completeSignIn(oidc) {
  const url = new URL(location.href);
  const code = url.searchParams.get("code");
  const returnedState = url.searchParams.get("state");
  const error = url.searchParams.get("error");
  if (!code && !error) return false;
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);  // a code is good for one try only
  for (const name of ["code", "state", "error", "error_description", "session_state", "iss"]) url.searchParams.delete(name);
  history.replaceState(history.state, "", url.pathname + url.search + (saved?.hash || url.hash));
  const failed = new Error("Sign-in could not be completed; please sign in again.");
  if (error || !saved || saved.state !== returnedState) throw failed;
  const meta = await discover(oidc.issuer);
  const r = await fetch(meta.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      client_id: oidc.clientId,
      code,
      redirect_uri: redirectUri(oidc),
      code_verifier: saved.verifier,
    }),
  });
  if (!r.ok) throw failed;
  const tokens = await r.json();
  // Cognito's access token carries client_id (the API accepts it); other providers may need the ID token.
  const token = tokens[oidc.tokenType === "id" ? "id_token" : "access_token"];
  if (!token) throw failed;
  keep(token);
  return true;
}

/** Sign out: forget the token here and, when the provider offers it, end its session too. */
export async function signOut(oidc) {
  forgetToken();
  if (!oidc?.logoutUrl) return false;
  const url = new URL(oidc.logoutUrl);
  url.searchParams.set("client_id", oidc.clientId);
  url.searchParams.set("logout_uri", redirectUri(oidc));
  location.assign(url.toString());
  return true;
}
