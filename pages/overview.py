import streamlit as st
st.title('Overview')
st.info('coming soon')
