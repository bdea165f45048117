// Orthanc Explorer: a link to the coercion plugin's page (added by the plugin through
// ExtendOrthancExplorer). Orthanc Explorer is jQuery Mobile; the link goes in each page's header.
$(document).on("pagebeforeshow", "div[data-role=page]", function () {
  var header = $(this).find("div[data-role=header]");
  if (header.length === 0 || header.find(".coercion-link").length > 0) return;
  $("<a>", { href: "../coercion/ui/", "class": "coercion-link ui-btn-right", "data-ajax": "false",
             "data-role": "button", "data-icon": "gear", text: "Coercion" })
    .appendTo(header).button();
});
