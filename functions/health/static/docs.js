"use strict";
// Swagger UI for this deployment. The page is <base>/v1/docs and the routes are <base>/v1/..., so "try it out"
// calls the deployment that served the page (whatever its stage or custom-domain mapping). Keys typed into
// "Authorize" stay in this page's memory: persistAuthorization is off, nothing goes to localStorage.
(function () {
  const base = location.pathname.replace(/\/v1\/docs\/?$/, "");
  fetch("openapi.json", { headers: { Accept: "application/json" } })
    .then((response) => response.json())
    .then((spec) => {
      spec.servers = [{ url: location.origin + base, description: "this deployment" }];
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        persistAuthorization: false,
        deepLinking: false,
        displayRequestDuration: true,
        validatorUrl: null,
      });
    })
    .catch((error) => {
      document.getElementById("swagger-ui").textContent = "Could not load openapi.json: " + error;
    });
})();
