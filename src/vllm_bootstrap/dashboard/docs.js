// Starts Swagger UI on this server's OpenAPI document. It lives in a file, not in the page,
// so that the page's Content-Security-Policy can refuse every inline script.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
