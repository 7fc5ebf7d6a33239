from django.contrib import admin
from django.urls import path

from config.health import healthz
from messaging_events.pipeline_page import pipeline_view

urlpatterns = [
    # Before admin.site.urls, which would answer 404 for an unknown admin path.
    path("admin/pipeline/", admin.site.admin_view(pipeline_view), name="admin-pipeline"),
    path("admin/", admin.site.urls),
    path("healthz", healthz),
]
